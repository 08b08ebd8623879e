"""Grad-CAM at the target layer (Selvaraju et al. 2017; SCIENCE.md §6)."""

from __future__ import annotations

import torch
from torch import nn

from shared.interpreters.base import Interpreter, layer_gradient, register_interpreter


@register_interpreter("gradcam")
class GradCAM(Interpreter):
    """Grad-CAM: ReLU(Σ_k ᾱ_k A_k), ᾱ_k the spatial mean of ∂y_c/∂A_k, divided by its per-image max."""

    normalise = "max"

    def raw_map(
        self, model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, act, grad = layer_gradient(model, layer, x, target)
        alpha = grad.mean(dim=(2, 3), keepdim=True)  # ᾱ_k: global-average-pooled gradient per channel
        return torch.relu((alpha * act).sum(dim=1)), logits
