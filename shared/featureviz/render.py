"""Activation maximisation of ``mean a_{l,j}`` (SCIENCE.md §5), batched over units.

One optimisation renders one image per unit: the batch dimension is the unit list,
image ``i`` maximises unit ``units[i]``'s activation averaged over positions. The
loss is the sum over the batch, so each image gets exactly its own unit's gradient
(the model runs in eval mode: no batch statistics couple the images), and with one
seeded generator per image a unit's image does not depend on the other units in
the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shared.featureviz.param import FourierImage
from shared.featureviz.transforms import TransformSpec, random_transform
from shared.hooks import unit_count, unit_scores
from shared.models.zoo import model_info

SEED_STRIDE = 1_000_003  # generator of unit j under seed s: s * SEED_STRIDE + j (distinct for j < stride)


@dataclass(frozen=True)
class RenderConfig:
    """Optimisation settings; defaults are SCIENCE.md §5's."""

    steps: int = 512  # Adam steps
    lr: float = 0.05  # Adam learning rate
    seed: int = 0  # fixes each unit's initial spectrum and its transform draws
    transforms: TransformSpec = field(default_factory=TransformSpec)
    size: int | None = None  # image side in px; None: the model's input crop
    redirect_relu: bool = True  # lucid's redirected ReLU gradient at a ReLU layer, so dead units can start

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"RenderConfig.steps={self.steps!r}: must be an integer >= 1 (§5 default: 512)")
        if not self.lr > 0:
            raise ValueError(f"RenderConfig.lr={self.lr!r}: must be > 0 (§5 default: 0.05)")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"RenderConfig.seed={self.seed!r}: must be a non-negative integer")


@dataclass
class Rendering:
    """Synthetic images of ``units`` at ``layer`` and what they reach on the model they were rendered for."""

    layer: str
    units: list[int]
    images: torch.Tensor  # float32 [U, 3, H, W] in [0, 1], CPU
    activation: torch.Tensor  # [U]: mean activation of unit units[i] on images[i] (the §5 objective)
    score: torch.Tensor  # [U]: the §1 unit score a_{l,j} (spatial squared L2 norm) of the same
    seconds: float


class _Stop(Exception):
    """Raised from the hook: nothing after the hooked layer is needed."""


class RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient is redirected for an image whose unit is dead everywhere (lucid's default).

    lucid's ``redirected_relu_grad``: where the ordinary ReLU gradient of an image is
    zero at every position (the unit starts dead on the grey start image), pass the
    gradient through the negative inputs too, except where it would push them lower,
    so the optimiser can walk out of the dead region. The forward value is the ReLU.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        relu_grad = torch.where(x < 0, torch.zeros_like(grad), grad)
        # Gradient descent moves x by -grad: grad > 0 at a negative x would push it lower still.
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        alive = relu_grad.flatten(1).norm(dim=1) > 0
        return torch.where(alive.view(-1, *[1] * (x.dim() - 1)), relu_grad, redirected)


class LayerOutput:
    """Context manager: ``run(x)`` returns the output of ``path`` (graph kept), ending the forward there.

    A ReLU module (AlexNet's conv1..conv5 aliases, SCIENCE.md §1) is evaluated here from its
    input with :class:`RedirectedReLU` when ``redirect_relu``: the same value, lucid's gradient.
    """

    def __init__(self, model: nn.Module, path: str, redirect_relu: bool = False) -> None:
        self.model, self.module = model, model.get_submodule(path)
        self.redirect = redirect_relu and isinstance(self.module, nn.ReLU)
        self._out: torch.Tensor | None = None

    def __enter__(self) -> LayerOutput:
        if self.redirect:
            self._handle = self.module.register_forward_pre_hook(self._pre_hook)
        else:
            self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        self._out = RedirectedReLU.apply(args[0].clone())
        raise _Stop

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        # A clone: a later in-place op (AlexNet's ReLUs) cannot change it (SCIENCE.md §1).
        self._out = output.clone()
        raise _Stop

    def run(self, x: torch.Tensor) -> torch.Tensor:
        self._out = None
        try:
            self.model(x)
        except _Stop:
            pass
        if self._out is None:
            raise RuntimeError(
                f"the hooked module {self.module.__class__.__name__} did not run in the forward"
            )
        return self._out


def unit_means(output: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``[N]``: row ``i``'s unit ``units[i]`` averaged over positions (tokens for a ViT block, none for FC)."""
    rows = torch.arange(output.shape[0], device=output.device)
    if output.dim() == 2:
        return output[rows, units]
    if output.dim() == 3:  # (N, tokens, D): unit = hidden dim, as in SCIENCE.md §1
        return output[rows, :, units].mean(dim=1)
    return output[rows, units].flatten(1).mean(dim=1)


def _normaliser(model_name: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    pre = model_info(model_name).preprocess
    mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)
    return lambda x: (x - mean) / std


def _check_units(model: nn.Module, model_name: str, layer: str, units: Sequence[int]) -> torch.Tensor:
    n = unit_count(model_name, layer, model)
    bad = [u for u in units if not (isinstance(u, int) and 0 <= u < n)]
    if not units or bad:
        raise ValueError(
            f"units {bad or list(units)!r} are not units of {model_name}.{layer}, which has units 0..{n - 1}"
        )
    return torch.tensor(list(units), dtype=torch.long)


def layer_activations(
    model: nn.Module, model_name: str, layer: str, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(activation, score)`` ``[N, J]`` of every unit on every image (``[0, 1]`` pixels, normalised here).

    ``activation`` is the §5 objective (mean over positions), ``score`` the §1 unit score.
    """
    device = next(model.parameters()).device
    path = model_info(model_name).resolve_layer(layer, model)
    norm = _normaliser(model_name, device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), LayerOutput(model, path) as rec:
            out = rec.run(norm(images.to(device)))
    finally:
        model.train(was_training)
    a = out.float()
    mean = a if a.dim() == 2 else a.mean(dim=1) if a.dim() == 3 else a.flatten(2).mean(dim=2)
    return mean.cpu(), unit_scores(out).cpu()


def measure(
    model: nn.Module, model_name: str, layer: str, images: torch.Tensor, units: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(activation, score)`` ``[N]`` of unit ``units[i]`` on ``images[i]`` (``[0, 1]`` pixels, normalised here)."""
    idx = _check_units(model, model_name, layer, units)
    mean, score = layer_activations(model, model_name, layer, images)
    rows = torch.arange(len(idx))
    return mean[rows, idx], score[rows, idx]


def render_units(
    model: nn.Module,
    model_name: str,
    layer: str,
    units: Sequence[int],
    config: RenderConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Rendering:
    """Render one activation-maximising image per unit of ``layer`` (SCIENCE.md §5), all in one optimisation.

    The model stays on its device; its training flag and ``requires_grad`` flags are restored afterwards.
    """
    cfg = config or RenderConfig()
    t0 = time.time()
    units = [int(u) for u in units]
    device = next(model.parameters()).device
    info = model_info(model_name)
    path = info.resolve_layer(layer, model)
    idx = _check_units(model, model_name, layer, units).to(device)
    size = cfg.size or info.preprocess.crop
    gens = [torch.Generator().manual_seed(cfg.seed * SEED_STRIDE + u) for u in units]
    param = FourierImage(len(units), size, size, generators=gens).to(device)
    norm = _normaliser(model_name, device)
    opt = torch.optim.Adam(param.parameters(), lr=cfg.lr)
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # gradients w.r.t. the image only
    try:
        with LayerOutput(model, path, redirect_relu=cfg.redirect_relu) as rec:
            for step in range(cfg.steps):
                opt.zero_grad(set_to_none=True)
                x = random_transform(param(), cfg.transforms, gens)
                loss = -unit_means(rec.run(norm(x)), idx).sum()
                loss.backward()
                opt.step()
                if progress is not None:
                    progress(step + 1, cfg.steps)
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), grad_flags):
            p.requires_grad_(flag)
    with torch.no_grad():
        images = param().detach()
    activation, score = measure(model, model_name, layer, images, units)
    return Rendering(layer, units, images.cpu(), activation, score, time.time() - t0)
