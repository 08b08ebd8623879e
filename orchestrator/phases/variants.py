"""Phase 1 (SCIENCE.md §4): every pruned variant, made once, as a Ray task placed like a trial.

Pruning + fine-tuning is the heaviest driver-side stage of a pruning sweep (the thesis
fine-tunes 20 ImageNet epochs per variant), and a cluster's head node usually has no GPU:
so each variant not yet in the store runs as a task with one GPU when the cluster has
them (else CPUs), as many at once as trials would run. Variants already stored are read
on the driver (no task). A task lost with its node is retried by Ray (``max_failures``)
and starts that variant over: a partial prune leaves nothing in the store.

A pruner that ranks units first (vulnerability pruning: the units an attack moves most)
gets its ranking run here, on the driver, planned like any trial and reused when stored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from jobs.activations import variant_tables
from jobs.metrics import read_unit_metrics
from jobs.prune import PruneResult, PruneSpec, prune_key, run_prune
from jobs.raysetup import ensure_ray
from jobs.runners import runner_for
from orchestrator.plan import Prepared, Variant, trial_job
from orchestrator.resources import concurrency, task_resources
from shared import store
from shared.attacks import family_of
from shared.pruners import get_pruner


def make_variants(spec: Any, prep: Prepared, bar=None) -> Prepared:
    """``prep`` with one variant per (base, pruning setting), in spec order; unpruned ones are the bases."""
    bar = bar or (lambda name: None)
    todo = [(base, p) for base in prep.variants for p in spec.pruning]
    pruned = [(base, p) for base, p in todo if get_pruner(p.method).prunes]
    results = iter(_prune_all(spec, prep, pruned, bar) if pruned else [])
    variants = tuple(
        _variant(base, p, next(results)) if get_pruner(p.method).prunes else base for base, p in todo
    )
    return dataclasses.replace(prep, variants=variants)


def _prune_all(spec: Any, prep: Prepared, pruned: list[tuple[Variant, Any]], bar) -> list[PruneResult]:
    ensure_ray(spec.ray_address)
    jobs = [prune_spec(spec, prep, base, p, bar) for base, p in pruned]
    return run_prunes(spec, jobs, bar("pruned variants"))


def prune_spec(spec: Any, prep: Prepared, base: Variant, p: Any, bar=None) -> PruneSpec:
    """The pruning job of setting ``p`` on ``base`` (with its ranked units when the pruner ranks)."""
    units: tuple[int, ...] = ()
    rate = p.rate
    pruner = get_pruner(p.method)
    if pruner.ranking_attack:
        progress = (bar or (lambda name: None))(
            f"ranking {base.model} {p.layer} units ({pruner.ranking_attack})"
        )
        units, rate = ranked_units(spec, prep, base, p, progress)
    return PruneSpec(
        dataset=prep.dataset, model=base.model, weights=base.weights, base_key=base.key, method=p.method,
        rate=rate, priority=p.priority, units=units, layer=p.layer, epochs=p.epochs, lr=p.lr,
        sparse_epochs=p.sparse_epochs, train_split=spec.dataset.train_split, val_split=spec.dataset.val_split,
    )  # fmt: skip


def ranked_units(
    spec: Any, prep: Prepared, base: Variant, p: Any, progress=None
) -> tuple[tuple[int, ...], float]:
    """The ``p.count`` units of ``p.layer`` that the pruner's ranking attack moves most, and their share."""
    pruner = get_pruner(p.method)
    name = pruner.ranking_attack
    splits = (spec.dataset.train_split, spec.dataset.val_split)
    variant_tables(prep.dataset, splits, base.model, base.weights, base.key, (p.layer,), spec.store)
    layer_entries = [a for a in spec.attacks if a.name == name and getattr(a, "scope", "layer") == "layer"]
    entry = layer_entries[0] if layer_entries else family_of(name).config(name=name)
    job = trial_job(spec, prep, base, entry, (p.layer,), spec.seeds[0])
    report = None
    if progress is not None:
        report = lambda m: progress(int(m["step"]), None, acc_drop=float(m.get("acc_drop", 0.0)))  # noqa: E731
    runner = runner_for(name)
    outcome = runner.stored(job, spec.store) or runner.run(job, spec.store, report=report)
    table = read_unit_metrics(outcome.unit_tables[f"{p.layer}/{spec.dataset.train_split}"])
    units = pruner.rank(table, p.count)
    return tuple(int(u) for u in units), p.count / table.num_rows


def _variant(base: Variant, p: Any, res: PruneResult) -> Variant:
    pruner = get_pruner(p.method)
    return Variant(base.model, res.model_uri, res.key, base.key, p.method, pruner.rate_label(p), res.weight_rate,
                   res.filter_rate, res.acc, pruner.priority_label(p))  # fmt: skip


def _prune_task(ps: PruneSpec, store_uri: str, s3: Any, threads: int) -> PruneResult:
    import torch

    store.configure(s3)  # the driver's S3 endpoint and credentials (never from the URI)
    torch.set_num_threads(max(1, threads))
    return run_prune(ps, store_uri)


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
