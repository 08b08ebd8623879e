"""Pixel-space view of a model (SCIENCE.md §7): input attacks work on images in [0, 1].

Our models expect normalised inputs ``(x − mean) / std`` (``ModelInfo.preprocess``); the
ε-ball and the [0, 1] clamp of §7 live in pixel space, so attacks call a model with the
normalisation in front.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.models.zoo import model_info


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class Normalise(nn.Module):
    """``(x − mean) / std`` per channel, as the model's preprocessing."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | None = None):
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean={list(mean)}, std={list(std)}: need equal lengths and std > 0")
        self.register_buffer("mean", torch.tensor(list(mean), device=device).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), device=device).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelModel(nn.Module):
    """A classifier on [0, 1] images: ``model(normalise(x))``; ``.model`` is the wrapped module."""

    def __init__(self, model: nn.Module, normalise: Normalise):
        super().__init__()
        self.normalise = normalise
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalise(x))


def normaliser(model_name: str, device: torch.device | None = None) -> Normalise:
    """The registered model's normalisation (``model_info(name).preprocess`` mean/std)."""
    pre = model_info(model_name).preprocess
    return Normalise(pre.mean, pre.std, device)


def pixel_model(model: nn.Module, model_name: str) -> PixelModel:
    """Wrap a registered model so it takes [0, 1] images (its normalisation in front)."""
    return PixelModel(model, normaliser(model_name, _device(model)))
