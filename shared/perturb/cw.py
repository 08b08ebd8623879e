"""Targeted C&W L2 (Carlini & Wagner 2017), the attack PSE interprets (SCIENCE.md §7).

``x' = (tanh(w) + 1)/2`` keeps pixels in [0, 1]; Adam on ``w`` minimises
``‖x' − x‖²₂ + c·max(max_{i≠t} Z_i − Z_t, −κ)``. ``search_steps`` > 1 binary-searches ``c``
per image (×10 until the first success, then bisection). The result per image is the
successful iterate with the smallest L2 distance, or the last iterate if none succeeded.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.interpreters.base import as_target
from shared.perturb.pgd import check_images


def _margin(logits: torch.Tensor, t: torch.Tensor, kappa: float) -> torch.Tensor:
    """``max(max_{i≠t} Z_i − Z_t, −κ)`` per image: ≤ 0 once ``t`` leads."""
    z_t = logits.gather(1, t.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, t.view(-1, 1), float("-inf")).amax(1)
    return torch.clamp(other - z_t, min=-kappa)


@torch.enable_grad()
def _run(
    model: nn.Module, x0: torch.Tensor, t: torch.Tensor, c: torch.Tensor, kappa: float, steps: int, lr: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation at fixed ``c`` [N]: best images, their L2² (inf: never successful), last iterate."""
    w = torch.atanh((2 * x0 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best, best_d = x0.clone(), torch.full((len(x0),), float("inf"), device=x0.device)
    for i in range(steps + 1):
        adv = (torch.tanh(w) + 1) / 2
        logits = model(adv)
        dist = (adv - x0).pow(2).flatten(1).sum(1)
        ok = (logits.argmax(1) == t) & (dist.detach() < best_d)
        best_d = torch.where(ok, dist.detach(), best_d)
        best[ok] = adv.detach()[ok]
        if i == steps:
            break
        opt.zero_grad()
        (dist + c * _margin(logits, t, kappa)).sum().backward()
        opt.step()
    return best, best_d, adv.detach()


def cw_l2(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    search_steps: int = 1,
) -> torch.Tensor:
    """Targeted C&W L2 on pixel images ``x`` in [0, 1]; ``model`` takes [0, 1] images."""
    check_images(x)
    if c <= 0 or kappa < 0 or steps < 0 or lr <= 0 or search_steps < 1:
        raise ValueError(
            f"c={c!r} (> 0), kappa={kappa!r} (>= 0), steps={steps!r} (>= 0), lr={lr!r} (> 0), "
            f"search_steps={search_steps!r} (>= 1): a value is out of range"
        )
    x0 = x.detach()
    t = as_target(target, len(x0), x0.device)
    cs = torch.full((len(x0),), float(c), device=x0.device)
    lo, hi = torch.zeros_like(cs), torch.full_like(cs, float("inf"))
    out, out_d = x0.clone(), torch.full_like(cs, float("inf"))
    for _ in range(search_steps):
        adv, d, last = _run(model, x0, t, cs, kappa, steps, lr)
        better = d < out_d
        out[better], out_d = adv[better], torch.where(better, d, out_d)
        ok = torch.isfinite(d)
        hi = torch.where(ok, torch.minimum(hi, cs), hi)
        lo = torch.where(ok, lo, torch.maximum(lo, cs))
        cs = torch.where(torch.isfinite(hi), (lo + hi) / 2, cs * 10)
    miss = torch.isinf(out_d)  # never successful: the last iterate of the last run
    out[miss] = last[miss]
    return out
