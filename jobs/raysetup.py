"""Start or join Ray quietly (NOTES.md: Ray's own log dumps are silenced; we show our own progress)."""

from __future__ import annotations

import logging
import os


def quiet_ray_env() -> None:
    """Environment that must be set before ``ray.init`` to keep Ray's logs out of the user's terminal."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def quiet_data_context() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for name in ("ray.data", "ray.data._internal", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one bound to 127.0.0.1."""
    quiet_ray_env()
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs: dict = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1", **kwargs)
    quiet_data_context()


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))
