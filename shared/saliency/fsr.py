"""Test losses ``t_i`` and the Fooling Success Rate of SCIENCE.md §6 (Heo Eq. 6).

``FSR = mean_i 1{t_i ∈ R_f}``: Location and Top-k use their fooling losses per image
(:func:`shared.saliency.losses.location_loss`, :func:`~shared.saliency.losses.topk_loss`);
Center-mass and Active have their own test losses below. A NaN ``t_i`` (e.g. Spearman of a
constant map) counts as not fooled.
"""

from __future__ import annotations

import math

import torch

from shared.saliency.losses import center_of_mass, check_maps

# R_f per fooling kind, both ends inclusive (Heo §4, appendix C).
FSR_RANGES: dict[str, tuple[float, float]] = {
    "location": (0.0, 0.2),
    "topk": (0.0, 0.3),
    "center_mass": (0.1, 1.0),
    "active": (0.5, 2.0),
}


def fsr(t: torch.Tensor, kind: str) -> float:
    """Fraction of test losses ``t`` (any shape) inside ``R_kind``."""
    if kind not in FSR_RANGES:
        raise ValueError(f"unknown fooling kind {kind!r}; valid kinds: {', '.join(FSR_RANGES)}")
    if t.numel() == 0:
        raise ValueError(f"FSR of {kind!r} over no test losses: pass at least one t_i")
    lo, hi = FSR_RANGES[kind]
    t = t.detach().flatten()
    return float(((t >= lo) & (t <= hi)).float().mean())  # NaN compares False: not fooled


def center_mass_test_loss(h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``t_i = ‖C(h(w)) − C(h(w0))‖₂ / √((H−1)² + (W−1)²)``: the centre's move over the map's diagonal."""
    check_maps(h)
    diagonal = math.hypot(h.shape[1] - 1, h.shape[2] - 1)
    return (center_of_mass(h) - center_of_mass(h0)).norm(dim=1) / max(diagonal, 1.0)


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions, as scipy's ``rankdata``) of a 1-d tensor."""
    sorted_v, order = torch.sort(v)
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    mean_rank = ends - (counts.to(torch.float64) - 1) / 2  # 1-based mean position of each tie group
    ranks = torch.empty_like(v, dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation per image between maps ``[N, H, W]`` (NaN when a map is constant)."""
    check_maps(a, "a")
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    out = []
    for x, y in zip(a.detach().flatten(1), b.detach().flatten(1)):
        rx, ry = _ranks(x), _ranks(y)
        rx, ry = rx - rx.mean(), ry - ry.mean()
        out.append((rx * ry).sum() / (rx.norm() * ry.norm()))
    return torch.stack(out).to(a.dtype)


def active_test_loss(
    h_c1: torch.Tensor, h_c2: torch.Tensor, h0_c1: torch.Tensor, h0_c2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t_i for c1, t_i for c2)``: ``s(c1, c2) − s(c1, c1)`` and ``s(c2, c1) − s(c2, c2)``, ``s(c, c') =
    Spearman(h_c(w), h_c'(w0))`` (the paper's Spearman; Heo's code uses Pearson of sign maps, NOTES.md)."""
    t1 = spearman(h_c1, h0_c2) - spearman(h_c1, h0_c1)
    t2 = spearman(h_c2, h0_c1) - spearman(h_c2, h0_c2)
    return t1, t2
