"""Phase 2: θ0's activation tables of every variant (Ray Data), top-k sets on train, D_τ on val."""

from __future__ import annotations

from typing import Any

from jobs.accuracy import run_accuracy
from jobs.activations import variant_tables
from orchestrator.plan import Prepared
from shared.attacks import family_of
from shared.progress import no_progress


def initial_tables(spec: Any, prep: Prepared, progress=None) -> None:
    """Only when a family of the sweep starts from them (saliency fooling reads no unit tables).

    Acc(θ0) on V too: every trial's metrics stage needs it, and computed here it is one forward
    pass per variant instead of one in each trial that starts before another has committed it.
    """
    if not spec.layers or not any(family_of(a.name).needs_tables for a in spec.attacks):
        if progress is not None:
            progress.close()
        return
    splits = (spec.dataset.train_split, spec.dataset.val_split)
    for v in dict.fromkeys(prep.variants):
        variant_tables(prep.dataset, splits, v.model, v.weights, v.key, tuple(spec.layers), spec.store,
                       progress or no_progress)  # fmt: skip
        run_accuracy(prep.dataset, spec.dataset.val_split, v.model, v.weights, spec.store, v.key, "init",
                     progress=progress or no_progress)  # fmt: skip
    if progress is not None:
        progress.close()
