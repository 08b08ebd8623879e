"""Norm pruning (SCIENCE.md §4; See et al. 2016, class-blind): one global L1 threshold over every
Conv2d and Linear weight, unstructured.

The masks stay as ``torch.nn.utils.prune`` forward pre-hooks while fine-tuning (pruned weights
stay exactly zero); :func:`shared.pruners.measure.make_permanent` folds them in before saving, so
the checkpoint is a plain state_dict of the unpruned shape.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from shared.models.layout import fast_layout
from shared.pruners.base import PruneContext, Pruner, ReportTable, check_rate, register_pruner
from shared.pruners.measure import weight_sparsity, weighted


def norm_prune(model: nn.Module, rate: float) -> dict:
    """Zero the ``rate`` share of all conv+linear weights with the smallest |w| (one global threshold).

    The masks stay attached (``weight = weight_orig * weight_mask``), so fine-tuning cannot revive a
    pruned weight; call ``make_permanent`` before saving. Returns the measured sparsity.
    """
    check_rate(rate)
    params = [(m, "weight") for _, m in weighted(model)]
    if not params:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
    # global_unstructured flattens the weights with .view, which a channels-last weight refuses:
    # it prunes in NCHW, and the model goes back to the layout it is used in (shared.models.layout)
    model.to(memory_format=torch.contiguous_format)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=rate)
    fast_layout(model)
    total = sum(m.weight_mask.numel() for m, _ in params)
    pruned = sum(int((m.weight_mask == 0).sum()) for m, _ in params)
    return {"rate": rate, "pruned": pruned, "total": total, "weight_sparsity": weight_sparsity(model)}


@register_pruner("norm")
class NormPruning(Pruner):
    """Zero the smallest |w| share `rate` of all conv and linear weights (global L1, unstructured)."""

    order = 1
    tables = {
        "": ReportTable("Table 4.1", "Table D", "norm pruning (global L1, unstructured)",
                        "Weight pruning rate", "share of weights pruned", "norm pruning"),
    }  # fmt: skip

    def prune(self, model: nn.Module, settings: Any, ctx: PruneContext) -> tuple[nn.Module, None]:
        norm_prune(model, settings.rate)
        return model, None
