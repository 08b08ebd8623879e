"""Fooling losses L_F of SCIENCE.md §6 (Heo Eqs. 3–5 and Active), as pure tensor functions.

Every function takes heatmaps ``[N, H, W]`` (already at the resolution positions are
compared at: upsample with ``shared.interpreters.upsample`` first where §6 asks) and
returns the per-image value ``[N]``; the batch loss is its ``.mean()``. The per-image
values of Location and Top-k are also their test losses ``t_i`` (Eq. 6). Maps of the
frozen initial model ``w0`` are constants: pass them detached.
"""

from __future__ import annotations

import torch

from shared.interpreters.base import EPS, minmax_normalise

TOPK_FRACTION = 0.10  # Top-k fooling: the top 10 % positions of the initial map (§6)
FRAME_DIVISOR = 7  # Location fooling: frame width ⌊H/7⌋ (Heo, appendix mask)


def check_maps(h: torch.Tensor, name: str = "h") -> None:
    if h.dim() != 3:
        raise ValueError(f"{name} has shape {tuple(h.shape)}; expected heatmaps [N, H, W]")


def frame_mask(
    height: int, width: int, device: torch.device | None = None, dtype=torch.float32
) -> torch.Tensor:
    """Location target ``m`` ``[H, W]``: 1 on a frame ⌊H/7⌋ rows and ⌊W/7⌋ columns wide, 0 inside."""
    bh, bw = height // FRAME_DIVISOR, width // FRAME_DIVISOR
    if bh < 1 or bw < 1:
        raise ValueError(
            f"a {height}x{width} map has no Location frame (width ⌊side/7⌋ = 0); upsample maps to >= 7 px first"
        )
    m = torch.ones(height, width, device=device, dtype=dtype)
    m[bh : height - bh, bw : width - bw] = 0
    return m


def location_loss(h: torch.Tensor) -> torch.Tensor:
    """Eq. 3 per image: ``mean_pos (h − m)²`` with the frame mask ``m``."""
    check_maps(h)
    m = frame_mask(h.shape[1], h.shape[2], h.device, h.dtype)
    return (h - m).pow(2).flatten(1).mean(1)


def topk_mask(h0: torch.Tensor, fraction: float = TOPK_FRACTION) -> torch.Tensor:
    """``P``: bool ``[N, H, W]``, the top ``fraction`` positions (⌊fraction·H·W⌋, at least 1) of min–max ``h0``."""
    check_maps(h0, "h0")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r}: must be in (0, 1]")
    flat = minmax_normalise(h0.detach()).flatten(1)
    k = max(1, int(fraction * flat.shape[1]))
    idx = flat.topk(k, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter(1, idx, True)
    return mask.view_as(h0)


def topk_loss(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 4 per image: ``mean_{p∈P} minmax(h)_p²`` (Heo's code squares; the paper prints |·|)."""
    check_maps(h)
    if mask.shape != h.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} differs from maps {tuple(h.shape)}; build it with topk_mask"
        )
    m = mask.to(h.dtype).flatten(1)
    return (minmax_normalise(h).flatten(1).pow(2) * m).sum(1) / m.sum(1)


def center_of_mass(h: torch.Tensor) -> torch.Tensor:
    """``C(h) = Σ_p p·h_p / Σ_p h_p`` on the min–max normalised map, ``[N, 2]`` as (row, column) in cells."""
    check_maps(h)
    w = minmax_normalise(h)
    rows = torch.arange(h.shape[1], device=h.device, dtype=h.dtype)
    cols = torch.arange(h.shape[2], device=h.device, dtype=h.dtype)
    total = w.sum(dim=(1, 2)).clamp_min(EPS)
    return torch.stack([(w.sum(2) * rows).sum(1) / total, (w.sum(1) * cols).sum(1) / total], dim=1)


def center_mass_loss(h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Eq. 5 per image: ``−‖C(h(w)) − C(h(w0))‖₁`` (minimising moves the centre away)."""
    return -(center_of_mass(h) - center_of_mass(h0.detach())).abs().sum(1)


def active_loss(
    h_c1: torch.Tensor, h_c2: torch.Tensor, h0_c1: torch.Tensor, h0_c2: torch.Tensor
) -> torch.Tensor:
    """Active fooling per image: ``½(mean (h_c1(w) − h_c2(w0))² + mean (h_c2(w) − h_c1(w0))²)`` (swap c1, c2)."""
    for name, t in (("h_c1", h_c1), ("h_c2", h_c2), ("h0_c1", h0_c1), ("h0_c2", h0_c2)):
        check_maps(t, name)
    a = (h_c1 - h0_c2.detach()).pow(2).flatten(1).mean(1)
    b = (h_c2 - h0_c1.detach()).pow(2).flatten(1).mean(1)
    return 0.5 * (a + b)
