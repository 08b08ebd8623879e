"""What one trial or pruning task reserves, and how many run at once (a leaf module)."""

from __future__ import annotations

from typing import Any


def gpus_per_trial(spec: Any) -> float:
    """GPUs of one trial (or pruning task): ``auto`` is 1 when the cluster has GPUs, else 0."""
    import ray

    res = spec.resources
    if res.gpus_per_trial != "auto":
        return float(res.gpus_per_trial)
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def _spare_cores(nodes: list) -> int:
    """Cores per node kept free of trials: one for the Ray Data tasks of trials on a multi-node cluster;
    none on one node, where the jobs stream in the trial's own process (``choose_executor``)."""
    return 1 if len(nodes) > 1 else 0


def concurrency(cpu_per: float, gpu_per: float) -> int:
    """Trials at once: one per GPU; on CPUs as many as fit beside the :func:`_spare_cores`."""
    import ray

    if gpu_per > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpu_per))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    spare = _spare_cores(nodes)
    per_node = [int(max(0.0, n["Resources"].get("CPU", 0) - spare) // max(cpu_per, 1e-9)) for n in nodes]
    return max(1, sum(per_node))


def task_resources(spec: Any) -> dict[str, float]:
    """One GPU per pruning task when the cluster has GPUs (CPUs as for a trial), else the smallest
    node's cores but its :func:`_spare_cores`: CPU training scales with threads."""
    import ray

    res = spec.resources
    gpu = gpus_per_trial(spec)
    if gpu > 0:
        return {"num_cpus": float(res.cpus_per_trial), "num_gpus": gpu}
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
    sizes = [n["Resources"]["CPU"] for n in nodes]
    return {
        "num_cpus": float(max(res.cpus_per_trial, min(sizes or [2]) - _spare_cores(nodes))),
        "num_gpus": 0.0,
    }
