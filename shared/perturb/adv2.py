"""Adv² (Zhang et al.; SCIENCE.md §7): targeted PGD that also keeps the interpreter's map benign.

Stage 1: ``steps_ce`` PGD steps on ``CE(f(x), t)``. Stage 2: ``steps_joint`` steps on
``CE(f(x), t) + λ·mean_p (g(x) − m)²``, ``g`` the target class's normalised map taken
through the smooth-ReLU twin (``smooth.py``), ``m`` the benign map, λ ramped geometrically
from ``lam_start`` to ``lam_end``. As the authors' code, the result per image is the
stage-2 iterate with the smallest map term among those the model classifies as ``t``;
an image never classified as ``t`` in stage 2 keeps its last iterate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shared.interpreters.base import Interpreter, as_target
from shared.perturb.pgd import check_budget, check_images, pgd, project
from shared.perturb.pixel import Normalise
from shared.perturb.smooth import smooth_functional_relu

MapFn = Callable[[torch.Tensor], torch.Tensor]  # pixel images [N,C,H,W] -> maps [N,h,w], differentiable

# Defaults: the authors' schedule c ∈ {1e-4 … 2e-2} on a map *sum* over 56×56 positions,
# rescaled to our per-position mean (× 3136): λ from ≈ 0.3 to ≈ 60.
LAM_START = 0.3
LAM_END = 60.0
ADV2_LOSS = "CE(f(x),t) + lam*mean_p (g_t(x)-m)^2; lam geometric lam_start->lam_end over stage 2"


class Adv2Result(NamedTuple):
    adv: torch.Tensor  # [N, C, H, W] in [0, 1]
    stage1: torch.Tensor  # the CE-only iterate (plain PGD from the same start)
    map_term: torch.Tensor  # [N] mean_p (g(adv) − m)² of the twin's map at ``adv`` (inf: never hit t)


def lam_schedule(steps: int, lam_start: float = LAM_START, lam_end: float = LAM_END) -> list[float]:
    """λ per stage-2 step: geometric ramp (the authors' stages, spread evenly on a log scale)."""
    if lam_start <= 0 or lam_end <= 0:
        raise ValueError(f"lam_start={lam_start!r}, lam_end={lam_end!r}: must be > 0")
    if steps <= 1:
        return [lam_start] * steps
    r = math.log(lam_end / lam_start) / (steps - 1)
    return [lam_start * math.exp(r * i) for i in range(steps)]


def twin_map_fn(
    interpreter: Interpreter,
    twin: nn.Module,
    model_name: str | None,
    normalise: Normalise,
    target: int | torch.Tensor,
    layer: str | None = None,
    size: int | tuple[int, int] | None = None,
) -> MapFn:
    """``g``: the interpreter's map of class ``target`` on the twin, differentiable in the pixels."""

    def g(x: torch.Tensor) -> torch.Tensor:
        with smooth_functional_relu():
            return interpreter.explain(twin, model_name, normalise(x), target, layer, size).heatmap

    return g


def adv2(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    map_fn: MapFn,
    benign_map: torch.Tensor,
    eps: float = 8 / 255,
    step: float = 1 / 255,
    steps_ce: int = 300,
    steps_joint: int = 1000,
    lam_start: float = LAM_START,
    lam_end: float = LAM_END,
) -> Adv2Result:
    """Adv² on pixel images ``x``; ``model`` takes [0, 1] images, ``map_fn`` gives ``g`` (see :func:`twin_map_fn`)."""
    check_budget(eps, step, steps_ce + steps_joint)
    check_images(x)
    x0 = x.detach()
    t = as_target(target, len(x0), x0.device)
    m = benign_map.detach()
    stage1 = pgd(model, x0, t, eps, step, steps_ce)
    adv, best = stage1.clone(), stage1.clone()
    best_term = torch.full((len(x0),), math.inf, device=x0.device)
    for lam in [*lam_schedule(steps_joint, lam_start, lam_end), None]:
        adv = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(adv)
            term = (map_fn(adv) - m).pow(2).flatten(1).mean(1)
        hit = (logits.argmax(1) == t) & (term.detach() < best_term)
        best_term = torch.where(hit, term.detach(), best_term)
        best[hit] = adv.detach()[hit]
        if lam is None:  # the last iterate is scored, not stepped
            break
        loss = (F.cross_entropy(logits, t, reduction="none") + lam * term).mean()
        (grad,) = torch.autograd.grad(loss, adv)
        adv = project(adv.detach() - step * grad.sign(), x0, eps)
    missed = torch.isinf(best_term)
    best[missed] = adv.detach()[missed]
    return Adv2Result(best, stage1, best_term)
