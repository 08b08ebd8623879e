"""LRP_T: layer-wise relevance propagation from the logit y_c down to the target layer (SCIENCE.md §6).

Composite rules (Heo et al.'s LRP-Composite, after Lapuschkin et al. 2017):
- Conv: α1β0 (z⁺): ``R_i = Σ_j (a_i w_ij)⁺ / (z⁺_j + 1e-2·sign(z⁺_j)) · R_j``, bias excluded.
- Linear: ε-rule with ε = 0.01 (bias included in z), ``sign(0) = +1``.
- BatchNorm, ReLU, Dropout (eval), Flatten: relevance passes through unchanged.
- Max/average pooling: the ε-rule with a 1e-9 stabiliser (relevance is conserved; max-pool
  routes it to the winner), as captum's default.
Every step is ``R_in = a ⊙ ∇_a(z · s)``, ``s = R_out / stab(z)``, taken with
``torch.autograd.grad(..., create_graph=True)``: the map is a differentiable function of
the weights (captum's and zennit's LRP edit ``weight.data`` and are not; NOTES.md).
Supported: sequential VGG/AlexNet-style models (``features -> avgpool -> flatten -> classifier``
or an ``nn.Sequential``); ResNet skips and DenseNet concatenations are not implemented yet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from shared.interpreters.base import Interpreter, register_interpreter
from shared.models.zoo import LayerError

CONV_STABILISER = 1e-2  # α1β0 conv rule: z⁺ + 1e-2·sign(z⁺) (§6)
LINEAR_EPSILON = 0.01  # ε-rule for Linear layers (§6)
POOL_STABILISER = 1e-9  # pooling: plain conservation, only guarding 0/0

_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Flatten)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_VGG_CHILDREN = ["features", "avgpool", "classifier"]
SUPPORTED = (
    "sequential VGG/AlexNet-style models (vgg_mini, vgg19, alexnet, alexnet_mini, or any nn.Sequential)"
)


class LRPUnsupportedError(LayerError):
    """LRP_T has no rules for this architecture or layer."""


def _flatten_sequential(prefix: str, seq: nn.Sequential) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for name, m in seq.named_children():
        path = f"{prefix}.{name}" if prefix else name
        out += _flatten_sequential(path, m) if isinstance(m, nn.Sequential) else [(path, m)]
    return out


def sequential_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a chain of ``(module path, leaf module)`` in forward order, or :class:`LRPUnsupportedError`."""
    if isinstance(model, nn.Sequential):
        return _flatten_sequential("", model)
    children = [name for name, _ in model.named_children()]
    if (
        children == _VGG_CHILDREN
    ):  # torchvision VGG/AlexNet forward: features, avgpool, flatten(1), classifier
        return [
            *_flatten_sequential("features", model.features),
            ("avgpool", model.avgpool),
            ("flatten", nn.Flatten()),
            *_flatten_sequential("classifier", model.classifier),
        ]
    raise LRPUnsupportedError(
        f"LRP_T does not support {type(model).__name__} (children: {', '.join(children)}): it handles {SUPPORTED}; "
        "use gradcam or simplegrad for this model"
    )


def _sign(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)  # sign(0) = +1, as captum: the stabiliser never cancels


def _propagate(
    fn: Callable[[torch.Tensor], torch.Tensor], a: torch.Tensor, r: torch.Tensor, eps: float
) -> torch.Tensor:
    """``a ⊙ ∇_a(fn(a) · s)`` with ``s = r / (fn(a) + eps·sign)``, differentiable in a, r and fn's weights."""
    a_in = a if a.requires_grad else a.detach().requires_grad_()  # no graph below: nothing is cut
    z = fn(a_in)
    s = r / (z + eps * _sign(z))
    (c,) = torch.autograd.grad(z, a_in, s, create_graph=True)
    return a_in * c


def _conv_plus(m: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """z⁺ of α1β0: positive contributions ``(a_i w_ij)⁺`` = a⁺·w⁺ + a⁻·w⁻, no bias."""
    if m.padding_mode != "zeros":
        raise LRPUnsupportedError(
            f"LRP_T supports zero-padded convs only, got padding_mode={m.padding_mode!r}"
        )
    w_pos, w_neg = m.weight.clamp(min=0), m.weight.clamp(max=0)

    def conv(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, None, m.stride, m.padding, m.dilation, m.groups)

    return lambda a: conv(a.clamp(min=0), w_pos) + conv(a.clamp(max=0), w_neg)


def relevance_step(path: str, m: nn.Module, a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Relevance at the input ``a`` of layer ``m`` from the relevance ``r`` at its output (rules above)."""
    if isinstance(m, _PASS_THROUGH):
        return r.reshape(a.shape)
    if isinstance(m, nn.Linear):
        z = F.linear(a, m.weight, m.bias)
        return a * ((r / (z + LINEAR_EPSILON * _sign(z))) @ m.weight)
    if isinstance(m, nn.Conv2d):
        return _propagate(_conv_plus(m), a, r, CONV_STABILISER)
    if isinstance(m, _POOLS):
        return _propagate(m, a, r, POOL_STABILISER)
    raise LRPUnsupportedError(
        f"LRP_T has no rule for layer {path!r} ({type(m).__name__}); it handles {SUPPORTED}"
    )


def _forward(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    # Out-of-place ReLU: every layer input is kept for the backward relevance pass.
    return F.relu(a) if isinstance(m, nn.ReLU) else m(a)


def lrp_relevance(
    model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance at the output of module ``layer`` ``[N, C, h, w]`` (start: ``R = y_c`` at class c), and the logits."""
    if any(
        m.training for m in model.modules() if isinstance(m, nn.Dropout | nn.modules.batchnorm._BatchNorm)
    ):
        raise ValueError(
            "LRP_T needs the model in eval mode (Dropout off, BatchNorm statistics frozen; SCIENCE.md §6): call model.eval()"
        )
    chain = sequential_layers(model)
    hits = [i for i, (p, _) in enumerate(chain) if p == layer or p.startswith(layer + ".")]
    if not hits:
        raise LayerError(
            f"layer {layer!r} is not on {type(model).__name__}'s sequential path; valid: {', '.join(p for p, _ in chain)}"
        )
    inputs = []
    a = x
    with torch.enable_grad():
        for _, m in chain:
            inputs.append(a)
            a = _forward(m, a)
        logits = a
        r = torch.zeros_like(logits).scatter(1, target.view(-1, 1), logits.gather(1, target.view(-1, 1)))
        for i in range(len(chain) - 1, hits[-1], -1):
            r = relevance_step(chain[i][0], chain[i][1], inputs[i], r)
    return r, logits


@register_interpreter("lrp")
class LRPT(Interpreter):
    """LRP_T: composite-rule relevance (α1β0 conv, ε=0.01 linear) at the target layer, channel sum, ReLU, min–max."""

    normalise = "minmax"

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        sequential_layers(model)

    def raw_map(
        self, model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r, logits = lrp_relevance(model, layer, x, target)
        if r.dim() != 4:
            raise LayerError(
                f"LRP_T needs a conv layer's [N, C, h, w] output at {layer!r}, got shape {tuple(r.shape)}"
            )
        return torch.relu(r.sum(dim=1)), logits
