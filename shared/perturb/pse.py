"""PSE region analysis (Xu et al.; SCIENCE.md §7): promotion vs suppression per grid region.

The image is split into an ``n×n`` grid ``G_i``; ``δ = x' − x`` is applied one region at a
time. ``PSE_FORMULA`` is the exact rule (log it as a run parameter):

- ``d0_i = Z_y(x) − Z_y(x + δ⊙1_{G_i})``: how much the region alone suppresses the true logit;
- ``dt_i = Z_t(x + δ⊙1_{G_i}) − Z_t(x)``: how much it promotes the target logit;
- signs and zeros: a negative effect counts as none, ``s_i = max(d0_i, 0)``,
  ``p_i = max(dt_i, 0)``; a region with ``max(s_i, p_i) ≤ PSE_FLOOR`` is *inactive* (no δ
  there, or it works against the attack); otherwise
  ``r_i = log2((p_i + PSE_FLOOR) / (s_i + PSE_FLOOR))`` and the region is promotion-dominated
  (``r_i > 1``), suppression-dominated (``r_i < −1``) or balanced;
- share of a kind inside a CAM region ``M`` (a bool pixel mask: top-k % of a Grad-CAM map
  upsampled to the input): ``|M ∩ ∪_{i of that kind} G_i| / |M|``, pixel-weighted.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from shared.interpreters.base import as_target

PSE_FLOOR = 1e-6  # logit units: below it an effect counts as zero
PSE_THRESHOLD = 1.0  # |r_i| > 1: promotion- or suppression-dominated (§7)
KINDS = ("promotion", "suppression", "balanced", "inactive")
PROMOTION, SUPPRESSION, BALANCED, INACTIVE = range(4)
PSE_FORMULA = (
    "d0_i=Z_y(x)-Z_y(x+delta*1_Gi); dt_i=Z_t(x+delta*1_Gi)-Z_t(x); s=max(d0,0), p=max(dt,0); "
    "inactive if max(s,p)<=1e-6 else r=log2((p+1e-6)/(s+1e-6)): r>1 promotion, r<-1 suppression, "
    "else balanced; share in CAM mask M = |M ∩ regions of kind|/|M| (pixels)"
)


class PSEResult(NamedTuple):
    d0: torch.Tensor  # [N, n*n] suppression of the true logit per region
    dt: torch.Tensor  # [N, n*n] promotion of the target logit per region
    ratio: torch.Tensor  # [N, n*n] r_i (nan for inactive regions)
    kind: torch.Tensor  # [N, n*n] long: PROMOTION, SUPPRESSION, BALANCED, INACTIVE
    regions: torch.Tensor  # [H, W] long: region index of each pixel (row-major)


def grid_regions(height: int, width: int, n: int, device: torch.device | None = None) -> torch.Tensor:
    """``[H, W]`` region index ``row·n + col`` of an ``n×n`` grid (edges rounded; sides need >= n px)."""
    if n < 1 or n > min(height, width):
        raise ValueError(f"grid n={n!r}: need 1 <= n <= min(H, W) = {min(height, width)}")
    rows = torch.arange(height, device=device) * n // height
    cols = torch.arange(width, device=device) * n // width
    return rows.view(-1, 1) * n + cols.view(1, -1)


def classify(d0: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r, kind)`` from the sensitivities, as ``PSE_FORMULA`` says."""
    s, p = d0.clamp(min=0), dt.clamp(min=0)
    r = torch.log2((p + PSE_FLOOR) / (s + PSE_FLOOR))
    kind = torch.full_like(d0, BALANCED, dtype=torch.long)
    kind[r > PSE_THRESHOLD] = PROMOTION
    kind[r < -PSE_THRESHOLD] = SUPPRESSION
    inactive = torch.maximum(s, p) <= PSE_FLOOR
    kind[inactive] = INACTIVE
    return torch.where(inactive, torch.nan, r), kind


@torch.no_grad()
def region_effects(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    true: int | torch.Tensor,
    target: int | torch.Tensor,
    n: int = 8,
    batch: int = 64,
) -> PSEResult:
    """Per-region ``d0``, ``dt``, ``r`` and kind; ``model`` takes [0, 1] images. Costs N·n² forwards."""
    if x.shape != x_adv.shape or x.dim() != 4:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)}: need equal [N, C, H, W]")
    N, _, H, W = x.shape
    y, t = as_target(true, N, x.device), as_target(target, N, x.device)
    regions = grid_regions(H, W, n, x.device)
    masks = torch.stack([regions == i for i in range(n * n)]).unsqueeze(1).to(x.dtype)  # [R,1,H,W]
    base = model(x)
    d0, dt = torch.empty(N, n * n, device=x.device), torch.empty(N, n * n, device=x.device)
    for j in range(N):
        delta = x_adv[j] - x[j]
        for a in range(0, n * n, batch):
            z = model(x[j] + masks[a : a + batch] * delta)
            d0[j, a : a + batch] = base[j, y[j]] - z[:, y[j]]
            dt[j, a : a + batch] = z[:, t[j]] - base[j, t[j]]
    r, kind = classify(d0, dt)
    return PSEResult(d0, dt, r, kind, regions)


def kind_shares(kind: torch.Tensor) -> torch.Tensor:
    """``[N, 4]``: the fraction of regions of each kind (columns in ``KINDS`` order)."""
    return torch.stack([(kind == k).float().mean(1) for k in range(len(KINDS))], dim=1)


def shares_in_mask(kind: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N, 4]``: share of the mask's pixels lying in regions of each kind (``PSE_FORMULA``).

    ``mask`` is a bool ``[N, H, W]`` CAM region (e.g. ``shared.saliency.losses.topk_mask`` of an
    upsampled Grad-CAM map); an empty mask gives nan.
    """
    if mask.shape[1:] != regions.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match the region map {tuple(regions.shape)}")
    pixel_kind = kind.gather(1, regions.flatten().expand(len(kind), -1)).view_as(mask)  # [N,H,W]
    m = mask.flatten(1).float()
    total = m.sum(1)
    out = [(m * (pixel_kind.flatten(1) == k).float()).sum(1) / total for k in range(len(KINDS))]
    return torch.stack(out, dim=1)
