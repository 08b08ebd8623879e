"""Start or join Ray quietly (NOTES.md: Ray's own log dumps are silenced; we show our own progress)."""

from __future__ import annotations

import logging
import os


def quiet_ray_env() -> None:
    """Environment that must be set before ``ray.init`` to keep Ray's logs out of the user's terminal.

    ``RAY_BACKEND_LOG_LEVEL`` is left alone on purpose: Ray's C++ core prints ``logging.cc: Set ray
    log level from environment variable ...`` to the driver's stderr whenever it is set (at any
    level, ``fatal`` included), while without it the driver's core logs only errors to stderr and
    the rest to its session's files.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune then prints nothing itself
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no TensorBoard/CSV loggers
    os.environ.setdefault(
        "TUNE_GLOBAL_CHECKPOINT_S", "2"
    )  # experiment state saved often: resume after SIGKILL


def quiet_data_context() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for name in ("ray.data", "ray.data._internal", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def worker_env() -> dict[str, str]:
    """Environment of every Ray worker of our jobs (set when the worker process starts).

    ``MALLOC_ARENA_MAX=1``: a Tune function trial trains in a thread of its actor, not in its main
    thread, and glibc gives each thread its own malloc arena, whose heaps are trimmed and faulted in
    again step after step; with that, the same training steps took 27-35 % longer in a trial than in
    the driver (benchmarks/orchestration.py --scale 3 and 6; 0 % with one arena). A value the user
    exported is kept.
    """
    return {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "1")}


def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one bound to 127.0.0.1.

    "Else" is ``address="local"``: a bare ``ray.init()`` joins any cluster someone started on this
    machine with ``ray start`` (it reads /tmp/ray/ray_current_cluster), another user's included,
    and then refuses ``num_cpus`` or waits for resources that cluster never frees.
    """
    quiet_ray_env()
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs: dict = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False,
                        "runtime_env": {"env_vars": worker_env()}}  # fmt: skip
        if address:
            ray.init(address=address, **kwargs)
        else:
            # address="local": always a new instance, never the cluster some other process on this
            # machine left in /tmp/ray/ray_current_cluster (ray.init() would join that one).
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1",
                     **kwargs)  # fmt: skip
    quiet_data_context()


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def free_gpus() -> float:
    """GPUs free right now: inside a Tune trial that holds the node's GPU this is 0, so nested Ray
    Data pipelines use CPU actors instead of waiting forever for a GPU the trial itself holds."""
    import ray

    return float(ray.available_resources().get("GPU", 0))


def task_cpus(most: int = 8) -> int:
    """CPUs for one CPU-bound task: what is free now, within the largest node (a task runs on one
    node; asking for the cluster's total would never be scheduled) and ``most``."""
    import ray

    node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(1, int(min(ray.available_resources().get("CPU", 0), node, most)))


def where() -> dict:
    """Process and Ray node running this code (recorded by jobs run as Ray tasks, for users tracing a
    result, and for tests)."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"pid": os.getpid(), "node": node}


def cpu_actor_pool(reserve: float = 0.25, per_actor: float = 0.5) -> tuple[int, float]:
    """(actors, CPUs each) for a CPU forward pool that fits in what is free now, keeping ``reserve``
    CPUs for the read tasks: whole-cluster sizing deadlocks inside a trial that holds CPUs itself."""
    import ray

    total = max(1, int(ray.cluster_resources().get("CPU", 1)))
    avail = float(ray.available_resources().get("CPU", 0))
    n = max(1, min(total, int((avail - reserve) // per_actor)))
    each = per_actor if avail - reserve >= n * per_actor else max(0.01, (avail - reserve) / n)
    return n, round(each, 4)
