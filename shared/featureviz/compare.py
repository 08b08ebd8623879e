"""Synthetic images of the same units before and after an attack, compared (SCIENCE.md §5, thesis Fig. 3.7).

Per unit: the activation each image reaches on the model it was rendered for, on
the other model too, and the cosine similarity of the two images' embeddings
``e(x)`` (§3's encoder). A push-down attack whose natural top-k images move while
the synthetic images stay alike (high cosine) is the thesis's "decorrelation".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from shared.embedders.base import Embedder
from shared.featureviz.render import measure


@dataclass
class UnitComparison:
    """One row per unit; ``a_b_on_a`` = activation of model a's synthetic image on model a, etc."""

    layer: str
    units: list[int]
    act_before: np.ndarray  # before-image on the before-model
    act_after: np.ndarray  # after-image on the after-model
    act_before_image_on_after: np.ndarray  # does the old feature still drive the attacked unit?
    act_after_image_on_before: np.ndarray
    cosine: np.ndarray  # cos(e(before-image), e(after-image))
    embedder: dict[str, Any]  # Embedder.describe(): which encoder produced the cosine

    def rows(self) -> list[dict[str, Any]]:
        cols = ("act_before", "act_after", "act_before_image_on_after", "act_after_image_on_before", "cosine")
        return [
            {"unit": u, **{c: float(getattr(self, c)[i]) for c in cols}} for i, u in enumerate(self.units)
        ]


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``[N, 3, H, W]`` in ``[0, 1]`` -> RGB PIL images (8 bit)."""
    arr = (images.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def compare_renderings(
    model_name: str,
    layer: str,
    units: list[int],
    before: tuple[nn.Module, torch.Tensor],
    after: tuple[nn.Module, torch.Tensor],
    embedder: Embedder,
) -> UnitComparison:
    """Compare the synthetic images ``before[1]`` / ``after[1]`` (``[U, 3, H, W]``, row i = unit ``units[i]``)
    rendered for the models ``before[0]`` / ``after[0]`` (same architecture and layer)."""
    (m_before, x_before), (m_after, x_after) = before, after
    if x_before.shape != x_after.shape or x_before.shape[0] != len(units):
        raise ValueError(
            f"compare_renderings: before images {tuple(x_before.shape)} and after images "
            f"{tuple(x_after.shape)} must both be [{len(units)}, 3, H, W], one per unit of {units}"
        )
    acts = {
        (img, mod): measure(m, model_name, layer, x, units)[0].numpy()
        for img, x in (("b", x_before), ("a", x_after))
        for mod, m in (("b", m_before), ("a", m_after))
    }
    e_before = embedder.embed_images(to_pil(x_before))
    e_after = embedder.embed_images(to_pil(x_after))
    cosine = (e_before * e_after).sum(axis=1)  # rows are L2-normalised by Embedder
    return UnitComparison(
        layer=layer,
        units=list(units),
        act_before=acts[("b", "b")],
        act_after=acts[("a", "a")],
        act_before_image_on_after=acts[("b", "a")],
        act_after_image_on_before=acts[("a", "b")],
        cosine=cosine.astype(np.float32),
        embedder=embedder.describe(),
    )
