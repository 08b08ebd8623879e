"""Phase 2: θ0's activation tables of every variant (Ray Data), top-k sets on train, D_τ on val."""

from __future__ import annotations

from typing import Any

from jobs.activations import variant_tables
from orchestrator.plan import Prepared
from shared.attacks import family_of
from shared.progress import no_progress


def initial_tables(spec: Any, prep: Prepared, progress=None) -> None:
    """Only when a family of the sweep starts from them (saliency fooling reads no unit tables)."""
    if not spec.layers or not any(family_of(a.name).needs_tables for a in spec.attacks):
        if progress is not None:
            progress.close()
        return
    splits = (spec.dataset.train_split, spec.dataset.val_split)
    for v in dict.fromkeys(prep.variants):
        variant_tables(prep.dataset, splits, v.model, v.weights, v.key, tuple(spec.layers), spec.store,
                       progress or no_progress)  # fmt: skip
    if progress is not None:
        progress.close()
