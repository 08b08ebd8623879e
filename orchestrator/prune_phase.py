"""Phase 1 on Ray: every pruned variant is one Ray task, placed like an attack trial.

Pruning + fine-tuning is the heaviest driver-side stage of a pruning sweep (the thesis
fine-tunes 20 ImageNet epochs per variant), and a cluster's head node usually has no GPU:
so each variant not yet in the store runs as a task with one GPU when the cluster has
them (else CPUs), as many at once as trials would run. Variants already stored are read
on the driver (no task). A task lost with its node is retried by Ray (``max_failures``)
and starts that variant over: a variant is minutes to hours, not a sweep, and a partial
prune leaves nothing in the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.prune import PruneResult, PruneSpec, prune_key, run_prune
from shared import store


def _prune_task(ps: PruneSpec, store_uri: str, s3: Any, threads: int) -> PruneResult:
    import torch

    store.configure(s3)  # the driver's S3 endpoint and credentials (never from the URI)
    torch.set_num_threads(max(1, threads))
    return run_prune(ps, store_uri)


def task_resources(spec: Any) -> dict[str, float]:
    """One GPU per variant when the cluster has GPUs (CPUs as for a trial), else all but one core
    of the smallest node: CPU training scales with threads, and Ray Data's reads need one core."""
    import ray

    from orchestrator.sweep import gpus_per_trial

    res = spec.resources
    gpu = gpus_per_trial(spec)
    if gpu > 0:
        return {"num_cpus": float(res.cpus_per_trial), "num_gpus": gpu}
    sizes = [
        n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")
    ]
    return {"num_cpus": float(max(res.cpus_per_trial, min(sizes or [2]) - 1)), "num_gpus": 0.0}


def run_prunes(spec: Any, jobs: Sequence[PruneSpec], progress=None) -> list[PruneResult]:
    """Results of ``jobs`` in order: stored ones read back, the others pruned as parallel Ray tasks."""
    import ray

    results: list[PruneResult | None] = [None] * len(jobs)
    todo = []
    for i, ps in enumerate(jobs):
        if store.read_manifest(store.join(spec.store, "models", prune_key(ps))) is not None:
            results[i] = run_prune(ps, spec.store)  # reuse: reads the manifest, computes nothing
        else:
            todo.append(i)
    if todo:
        from orchestrator.sweep import concurrency

        res = task_resources(spec)
        # Not all at once: a task's own Ray Data reads need free cores, which tasks queued on
        # every core would never leave (the same limit as the attack trials').
        at_once = concurrency(res["num_cpus"], res["num_gpus"])
        remote = ray.remote(_prune_task).options(max_retries=spec.max_failures, **res)
        s3 = store.current_s3()
        queue, pending = list(todo), {}
        done = len(jobs) - len(todo)
        if progress is not None:
            progress(done, len(jobs), phase="pruned variants")
        while queue or pending:
            while queue and len(pending) < at_once:
                i = queue.pop(0)
                pending[remote.remote(jobs[i], store.normalize(spec.store), s3, int(res["num_cpus"]))] = i
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = ray.get(ref)  # a task's error surfaces here, named by Ray
                done += 1
            if progress is not None:
                progress(done, len(jobs), phase="pruned variants")
    return [r for r in results if r is not None]
