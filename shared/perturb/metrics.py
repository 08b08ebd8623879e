"""Metrics of the input-space attacks (SCIENCE.md §7), pure tensor functions, per image ``[N]``.

Maps are ``[N, H, W]`` at the resolution they are compared at (upsample first). Distances
are per position: ``map_l1 = mean_p |a − b|``, ``map_l2 = √(mean_p (a − b)²)``, so maps of
different sizes give comparable numbers. Top-k regions are ``shared.saliency.losses.topk_mask``
(the top ⌊k·H·W⌋ positions, at least 1, of the min–max map; ties by ``torch.topk``).
"""

from __future__ import annotations

import torch

from shared.interpreters.base import as_target
from shared.saliency.losses import check_maps, topk_mask

TOPK_PERCENT = 20.0  # default k % of the top-k IoU and of PSE's CAM regions (a choice, not in §7)


def success(logits: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: prediction == target (§7's attack success)."""
    return logits.argmax(1) == as_target(target, len(logits), logits.device)


def success_rate(logits: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """Share of images classified as their target (scalar tensor)."""
    return success(logits, target).float().mean()


def _pair(a: torch.Tensor, b: torch.Tensor) -> None:
    check_maps(a, "a")
    check_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"maps have shapes {tuple(a.shape)} and {tuple(b.shape)}; upsample to one size first"
        )


def map_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean_p |a − b|`` per image."""
    _pair(a, b)
    return (a - b).abs().flatten(1).mean(1)


def map_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``√(mean_p (a − b)²)`` per image."""
    _pair(a, b)
    return (a - b).pow(2).flatten(1).mean(1).sqrt()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|A ∩ B| / |A ∪ B|`` of bool masks ``[N, H, W]`` per image (1 when both are empty)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def topk_iou(a: torch.Tensor, b: torch.Tensor, percent: float = TOPK_PERCENT) -> torch.Tensor:
    """IoU of the top-``percent`` % positions of two maps, per image."""
    _pair(a, b)
    if not 0 < percent <= 100:
        raise ValueError(f"percent={percent!r}: must be in (0, 100]")
    return mask_iou(topk_mask(a, percent / 100), topk_mask(b, percent / 100))
