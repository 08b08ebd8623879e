"""Smooth-ReLU twin for input gradients of maps (SCIENCE.md §7, Adv²; NOTES.md).

A ReLU network's input gradient is piecewise constant, so the gradient of a gradient map
(Grad-CAM's ᾱ, SimpleGrad) w.r.t. the input is zero almost everywhere. Adv² takes the map's
gradient through a twin whose ReLU *backward* is smooth while its forward is unchanged.

Formula used (``SMOOTH_RELU_FORMULA``): forward ``max(x, 0)``; backward
``∂/∂x ≈ max(x, 0) / √(x² + 1e-4)``, i.e. §7's ``x/√(x²+1e-4)`` on the positive side and
0 where ReLU passes nothing (the literal formula would send −1 through negative units).
Its own derivative, ``1e-4 / (x² + 1e-4)^{3/2}`` for x > 0, is what Adv² needs. The
authors' released code has several variants (one adds 1 on the negative side); this
masked one keeps the twin's first-order map close to the real map.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

SMOOTH_TAU = 1e-4
SMOOTH_RELU_FORMULA = "forward max(x,0); backward grad * max(x,0)/sqrt(x^2+1e-4)"


def smooth_relu_grad(x: torch.Tensor) -> torch.Tensor:
    """The twin's ReLU derivative: ``max(x, 0)/√(x² + τ)`` (differentiable in x for x > 0)."""
    return torch.relu(x) * torch.rsqrt(x * x + SMOOTH_TAU)


class _SmoothReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * smooth_relu_grad(x)  # plain tensor ops: create_graph=True differentiates it


def smooth_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """ReLU forward, smooth backward; ``inplace`` is accepted for F.relu's signature and ignored."""
    return _SmoothReLUFn.apply(x)


class SmoothReLU(nn.ReLU):
    """An ``nn.ReLU`` (so LRP's pass-through rule still applies) whose backward is smooth."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smooth_relu(x)


def smooth_relu_twin(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` whose ``nn.ReLU`` modules are :class:`SmoothReLU` (same module paths).

    ReLUs called functionally in ``forward`` (torchvision DenseNet's ``F.relu``) are smoothed
    only inside :func:`smooth_functional_relu`; run the twin there.
    """
    twin = copy.deepcopy(model)
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.ReLU:
                setattr(module, child_name, SmoothReLU())
    twin.requires_grad_(False)
    return twin


@contextlib.contextmanager
def smooth_functional_relu() -> Iterator[None]:
    """Inside: ``F.relu``, ``torch.relu`` and ``Tensor.relu`` are the smooth ReLU.

    Process-global while active (Ray actors run one task at a time); in-place spellings
    (``relu_``) and names bound at import (``from torch.nn.functional import relu``) are not
    patched: the twin's forward then keeps the plain ReLU there.
    """
    saved = (F.relu, torch.relu, torch.Tensor.relu)
    F.relu = smooth_relu
    torch.relu = smooth_relu
    torch.Tensor.relu = smooth_relu
    try:
        yield
    finally:
        F.relu, torch.relu, torch.Tensor.relu = saved
