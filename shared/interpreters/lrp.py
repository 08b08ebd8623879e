"""LRP_T: layer-wise relevance propagation from the logit y_c down to the target layer (SCIENCE.md §6).

Composite rules (Heo et al.'s LRP-Composite, after Lapuschkin et al. 2017):
- Conv: α1β0 (z⁺): ``R_i = Σ_j (a_i w_ij)⁺ / (z⁺_j + 1e-2·sign(z⁺_j)) · R_j``, bias excluded.
- Linear: ε-rule with ε = 0.01 (bias included in z), ``sign(0) = +1``.
- BatchNorm, ReLU, Dropout (eval), Flatten: relevance passes through unchanged.
- Max/average pooling: the ε-rule with a 1e-9 stabiliser (relevance is conserved; max-pool
  routes it to the winner), as captum's default.
- Residual block ``relu(main(x) + shortcut(x))``: the block's relevance is split between the two
  branches by their positive share ``z⁺_b / (z⁺_main + z⁺_skip)`` per position, each share
  propagated down its branch with the rules above and summed at ``x``.
- Dense block (DenseNet): the output is the concatenation ``[x, f_1, ..., f_L]``; relevance
  splits by channel, each new feature map's share flows down its layer into the concatenation
  that layer read, last layer first.
Every step is ``R_in = a ⊙ ∇_a(z · s)``, ``s = R_out / stab(z)``, taken with
``torch.autograd.grad(..., create_graph=True)``: the map is a differentiable function of
the weights (captum's and zennit's LRP edit ``weight.data`` and are not; NOTES.md).
Supported: sequential VGG/AlexNet-style models, torchvision ResNets and the project's
``resnet_mini``, torchvision DenseNets (``chain`` below says how each is read in forward order).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shared.interpreters.base import Interpreter, register_interpreter
from shared.models.refnet import BasicBlock as MiniBlock
from shared.models.refnet import ResNetMini
from shared.models.zoo import LayerError


def _torchvision_is(m: nn.Module, module: str, *classes: str) -> bool:
    """``m`` is one of torchvision.models.``module``'s ``classes``. Read from ``sys.modules``: a model
    of those classes exists only if torchvision built it, and importing torchvision here would cost
    every process that computes maps seconds (its ops import torch._dynamo)."""
    tv = sys.modules.get(f"torchvision.models.{module}")
    return tv is not None and isinstance(m, tuple(getattr(tv, c) for c in classes))


CONV_STABILISER = 1e-2  # α1β0 conv rule: z⁺ + 1e-2·sign(z⁺) (§6)
LINEAR_EPSILON = 0.01  # ε-rule for Linear layers (§6)
POOL_STABILISER = 1e-9  # pooling: plain conservation, only guarding 0/0

_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Flatten)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_VGG_CHILDREN = ["features", "avgpool", "classifier"]
SUPPORTED = (
    "sequential VGG/AlexNet-style models (vgg_mini, vgg19, alexnet, alexnet_mini, any nn.Sequential), "
    "ResNets (resnet50, resnet_mini) and DenseNets (densenet121)"
)

Chain = list[tuple[str, nn.Module]]


class LRPUnsupportedError(LayerError):
    """LRP_T has no rules for this architecture or layer."""


def _flatten_sequential(prefix: str, seq: nn.Sequential) -> Chain:
    out: Chain = []
    for name, m in seq.named_children():
        path = f"{prefix}.{name}" if prefix else name
        out += _flatten_sequential(path, m) if isinstance(m, nn.Sequential) else [(path, m)]
    return out


def _children_then_head(model: nn.Module, head: str) -> Chain:
    """A ResNet's forward: its children in order, flattened before the ``head`` Linear."""
    out: Chain = []
    for name, m in model.named_children():
        if name == head:
            out.append(("flatten", nn.Flatten()))
        out += _flatten_sequential(name, m) if isinstance(m, nn.Sequential) else [(name, m)]
    return out


def sequential_layers(model: nn.Module) -> Chain:
    """The model as a chain of ``(module path, module)`` in forward order, or :class:`LRPUnsupportedError`.

    Entries are leaves with a rule above, or residual / dense blocks (one entry each: relevance
    crosses them with their own rule; a target layer inside a block is not on the chain).
    """
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
    if isinstance(model, ResNetMini) or _torchvision_is(model, "resnet", "ResNet"):
        return _children_then_head(model, "fc")
    if _torchvision_is(
        model, "densenet", "DenseNet"
    ):  # features, relu, adaptive avg pool, flatten, classifier
        return [
            *_flatten_sequential("features", model.features),
            ("relu", nn.ReLU()),
            ("avgpool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("classifier", model.classifier),
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


# --- residual and dense blocks ---------------------------------------------------------------


def _block_branches(m: nn.Module) -> tuple[Chain, Chain, nn.Module] | None:
    """``(main, shortcut, final activation)`` of a residual block, or None for any other module."""
    if _torchvision_is(m, "resnet", "BasicBlock", "Bottleneck"):
        names = ["conv1", "bn1", "relu", "conv2", "bn2"]
        if _torchvision_is(m, "resnet", "Bottleneck"):
            names += ["relu", "conv3", "bn3"]
        skip = _flatten_sequential("downsample", m.downsample) if m.downsample is not None else []
        return [(n, getattr(m, n)) for n in names], skip, m.relu
    if isinstance(m, MiniBlock):
        main = [(n, getattr(m, n)) for n in ["conv1", "bn1", "relu1", "conv2", "bn2"]]
        skip = _flatten_sequential("shortcut", m.shortcut) if isinstance(m.shortcut, nn.Sequential) else []
        return main, skip, m.relu2
    return None


def _dense_layers(m: nn.Module) -> list[Chain] | None:
    """Each dense layer of a DenseNet block as a chain over the concatenation it reads, or None."""
    if not _torchvision_is(m, "densenet", "_DenseBlock"):
        return None
    names = ["norm1", "relu1", "conv1", "norm2", "relu2", "conv2"]
    return [[(n, getattr(layer, n)) for n in names] for layer in m.values()]


def _run(chain: Chain, a: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every entry's input along ``chain`` and the chain's output."""
    inputs = []
    for _, m in chain:
        inputs.append(a)
        a = _forward(m, a)
    return inputs, a


def _back(chain: Chain, inputs: Sequence[torch.Tensor], r: torch.Tensor, stop: int = -1) -> torch.Tensor:
    """Relevance at ``inputs[stop + 1]`` from the relevance ``r`` at the chain's output."""
    for i in range(len(chain) - 1, stop, -1):
        r = relevance_step(chain[i][0], chain[i][1], inputs[i], r)
    return r


def _forward(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """The module's output with out-of-place ReLUs: every layer input is kept for the backward pass."""
    if isinstance(m, nn.ReLU):
        return F.relu(a)
    if (branches := _block_branches(m)) is not None:
        main, skip, _ = branches
        return F.relu(_run(main, a)[1] + _run(skip, a)[1])
    if (layers := _dense_layers(m)) is not None:
        feats = [a]
        for chain in layers:
            feats.append(_run(chain, torch.cat(feats, 1))[1])
        return torch.cat(feats, 1)
    return m(a)


def _residual_relevance(
    branches: tuple[Chain, Chain, nn.Module], a: torch.Tensor, r: torch.Tensor
) -> torch.Tensor:
    main, skip, _ = branches
    main_in, z_main = _run(main, a)
    skip_in, z_skip = _run(skip, a)
    p_main, p_skip = z_main.clamp(min=0), z_skip.clamp(min=0)
    den = p_main + p_skip
    den = den + (den == 0).to(den.dtype)  # no positive part: the output is 0 and so is its relevance
    r_main, r_skip = r * p_main / den, r * p_skip / den
    return _back(main, main_in, r_main) + _back(skip, skip_in, r_skip)


def _dense_relevance(layers: list[Chain], a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    feats, reads = [a], []
    for chain in layers:
        inputs, out = _run(chain, torch.cat(feats, 1))
        reads.append(inputs)
        feats.append(out)
    sizes = [f.shape[1] for f in feats]
    parts = list(torch.split(r, sizes, dim=1))
    for i in range(len(layers) - 1, -1, -1):
        r_read = _back(layers[i], reads[i], parts[i + 1])
        for j, share in enumerate(torch.split(r_read, sizes[: i + 1], dim=1)):
            parts[j] = parts[j] + share
    return parts[0]


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
    if (branches := _block_branches(m)) is not None:
        return _residual_relevance(branches, a, r)
    if (layers := _dense_layers(m)) is not None:
        return _dense_relevance(layers, a, r)
    raise LRPUnsupportedError(
        f"LRP_T has no rule for layer {path!r} ({type(m).__name__}); it handles {SUPPORTED}"
    )


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
            f"layer {layer!r} is not on {type(model).__name__}'s LRP path (a layer inside a residual or "
            f"dense block is not); valid: {', '.join(p for p, _ in chain)}"
        )
    with torch.enable_grad():
        inputs, logits = _run(chain, x)
        r = torch.zeros_like(logits).scatter(1, target.view(-1, 1), logits.gather(1, target.view(-1, 1)))
        r = _back(chain, inputs, r, stop=hits[-1])
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
