"""SimpleGrad_T: the plain gradient at the target layer (Heo et al.'s subscript T; SCIENCE.md §6)."""

from __future__ import annotations

import torch
from torch import nn

from shared.interpreters.base import Interpreter, layer_gradient, register_interpreter


@register_interpreter("simplegrad")
class SimpleGradT(Interpreter):
    """SimpleGrad_T: ∂y_c/∂A at the target layer summed over channels, ReLU, min–max normalised."""

    normalise = "minmax"

    def raw_map(
        self, model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # In a ReLU net this map is piecewise constant in the weights below the layer (zero second
        # derivative): fooling it moves only the weights above. Heo use it for transfer tests only.
        logits, _, grad = layer_gradient(model, layer, x, target)
        return torch.relu(grad.sum(dim=1)), logits
