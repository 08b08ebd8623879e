"""Targeted L∞ PGD in pixel space (SCIENCE.md §7, the baseline of Adv²), written in the project.

``x_{k+1} = Π(x_k − step·sign ∇_x L(x_k))``, Π: clip to ``x0 ± ε`` and then to [0, 1]; the
default ``L`` is the batch-mean cross-entropy to the target class. It reproduces torchattacks
3.5.1's ``PGD`` in ``targeted(label)`` mode (which ascends ``−CE``) to the bit; the Adv² loss
is passed in as ``loss_fn``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from shared.interpreters.base import as_target

LossFn = Callable[[torch.Tensor], torch.Tensor]  # adversarial images [N,C,H,W] -> scalar to minimise


def check_budget(eps: float, step: float, steps: int) -> None:
    """Errors before any work: ε in (0, 1], a positive step, steps >= 0."""
    if not 0 < eps <= 1:
        raise ValueError(f"eps={eps!r}: the L∞ budget must be in (0, 1] (pixel scale; 8/255 in §7)")
    if step <= 0:
        raise ValueError(f"step={step!r}: must be > 0 (1/255 in §7)")
    if steps < 0:
        raise ValueError(f"steps={steps!r}: must be >= 0")


def check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"images have shape {tuple(x.shape)}; expected [N, C, H, W] in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f"images range over [{lo:.3g}, {hi:.3g}]; attacks take pixel images in [0, 1] "
            "(undo the normalisation and pass the model through shared.perturb.pixel_model)"
        )


def project(adv: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Π of §7: the L∞ ball around ``x0``, then the [0, 1] box (torchattacks' order)."""
    delta = torch.clamp(adv - x0, min=-eps, max=eps)
    return torch.clamp(x0 + delta, min=0, max=1).detach()


def ce_loss(model: nn.Module, target: torch.Tensor) -> LossFn:
    """Batch-mean CE to ``target`` (per image independent in eval mode: the sign step is per image)."""
    return lambda adv: F.cross_entropy(model(adv), target)


def signed_step(
    adv: torch.Tensor, x0: torch.Tensor, loss_fn: LossFn, eps: float, step: float
) -> torch.Tensor:
    """One PGD step downhill on ``loss_fn``, projected."""
    adv = adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(adv)
    (grad,) = torch.autograd.grad(loss, adv)
    return project(adv.detach() - step * grad.sign(), x0, eps)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    eps: float = 8 / 255,
    step: float = 1 / 255,
    steps: int = 300,
    random_start: bool = False,
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Targeted PGD on pixel images ``x`` in [0, 1]; ``model`` takes [0, 1] images (see ``pixel_model``).

    ``loss_fn(adv) -> scalar`` replaces the CE (Adv²'s joint loss); ``random_start`` draws
    the start uniformly in the ε-ball (with ``generator`` for reproducibility).
    """
    check_budget(eps, step, steps)
    check_images(x)
    x0 = x.detach()
    loss_fn = loss_fn or ce_loss(model, as_target(target, len(x0), x0.device))
    adv = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        adv = torch.clamp(adv + (2 * noise - 1) * eps, 0, 1)
    for _ in range(steps):
        adv = signed_step(adv, x0, loss_fn, eps, step)
    return adv
