"""Phase 2: θ0's activation tables of every variant, top-k sets on train, D_τ on val, and the
embeddings of θ0's top-k images.

jobs/activations.py picks the executor: local streaming on one node, Ray Data across nodes."""

from __future__ import annotations

from typing import Any

from jobs.accuracy import run_accuracy
from jobs.activations import variant_tables
from jobs.metrics import initial_embeddings
from orchestrator.plan import Prepared, needs_tables
from shared.progress import no_progress


def initial_tables(spec: Any, prep: Prepared, progress=None) -> None:
    """θ0's tables of every variant, when :func:`needs_tables`.

    Acc(θ0) on V too: every trial's metrics stage needs it, and computed here it is one forward
    pass per variant instead of one in each trial that starts before another has committed it.
    Likewise the embeddings of θ0's top-k images (``jobs.embedding_cache``), which every trial's
    CLIP-δ compares against.
    """
    if not needs_tables(spec):
        if progress is not None:
            progress.close()
        return
    splits = (spec.dataset.train_split, spec.dataset.val_split)
    for v in dict.fromkeys(prep.variants):
        variant_tables(prep.dataset, splits, v.model, v.weights, v.key, tuple(spec.layers), spec.store,
                       progress or no_progress)  # fmt: skip
        run_accuracy(prep.dataset, spec.dataset.val_split, v.model, v.weights, spec.store, v.key, "init",
                     progress=progress or no_progress)  # fmt: skip
        initial_embeddings(prep.dataset, v.model, v.weights, v.key, tuple(spec.layers), tuple(spec.metrics.splits),
                           spec.metrics.k, prep.embedder, spec.store, progress=progress or no_progress)  # fmt: skip
    if progress is not None:
        progress.close()
