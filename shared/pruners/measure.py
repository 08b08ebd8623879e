"""What pruning removed (SCIENCE.md §4): weight sparsity, weight and filter pruning rates, and
folding ``torch.nn.utils.prune`` masks into the weights. Shared by every method, so the three
report comparable numbers."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def weighted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv2d and Linear modules: the layers whose weights pruning counts."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses: ``weight_orig * weight_mask`` while a prune mask is attached
    (``module.weight`` is only recomputed by the next forward, so it can be stale after an optimizer step)."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return module.weight_orig * module.weight_mask
    return module.weight


@torch.no_grad()
def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros over all Conv2d and Linear weights (biases excluded)."""
    zeros = total = 0
    for _, m in weighted(model):
        w = _weight(m)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


@torch.no_grad()
def weight_pruning_rate(model_before: nn.Module, model_after: nn.Module) -> float:
    """1 - (non-zero conv+linear weights after) / (conv+linear weights before).

    Counts weights that were removed (structured) and weights that are zero (unstructured) alike,
    so the three methods report comparable numbers. Unlike the thesis's Table 4.4, the input
    weights of the next layer that a removed filter takes with it are counted as removed.
    """
    before = sum(_weight(m).numel() for _, m in weighted(model_before))
    nonzero = sum(int((_weight(m) != 0).sum()) for _, m in weighted(model_after))
    return 1.0 - nonzero / max(before, 1)


@torch.no_grad()
def filter_sparsity(model_before: nn.Module, model_after: nn.Module) -> float:
    """Fraction of conv filters (output channels over all Conv2d) that are gone in ``model_after``:
    physically removed, or (unstructured) left with all-zero weights."""
    convs_after = {n: m for n, m in weighted(model_after) if isinstance(m, nn.Conv2d)}
    total = removed = 0
    for name, m in weighted(model_before):
        if not isinstance(m, nn.Conv2d):
            continue
        total += m.out_channels
        after = convs_after.get(name)
        if after is None:
            removed += m.out_channels
            continue
        dead = int((_weight(after).flatten(1) == 0).all(dim=1).sum())
        removed += m.out_channels - after.out_channels + dead
    return removed / max(total, 1)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every prune mask into its weight and drop the hooks: a plain state_dict again."""
    for m in model.modules():
        names = [
            h._tensor_name for h in m._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)
        ]
        for name in names:
            prune.remove(m, name)
    return model
