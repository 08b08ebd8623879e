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


def concurrency(cpu_per: float, gpu_per: float) -> int:
    """Trials at once: one per GPU; on CPUs leave one core per node for the Ray Data tasks of the trials."""
    import ray

    if gpu_per > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpu_per))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [int(max(0.0, n["Resources"].get("CPU", 0) - 1) // max(cpu_per, 1e-9)) for n in nodes]
    return max(1, sum(per_node))


def task_resources(spec: Any) -> dict[str, float]:
    """One GPU per pruning task when the cluster has GPUs (CPUs as for a trial), else all but one core
    of the smallest node: CPU training scales with threads, and Ray Data's reads need one core."""
    import ray

    res = spec.resources
    gpu = gpus_per_trial(spec)
    if gpu > 0:
        return {"num_cpus": float(res.cpus_per_trial), "num_gpus": gpu}
    sizes = [
        n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")
    ]
    return {"num_cpus": float(max(res.cpus_per_trial, min(sizes or [2]) - 1)), "num_gpus": 0.0}
