"""Random jitter, scale and rotation each step (SCIENCE.md §5), differentiable through ``grid_sample``.

Transformation robustness (Olah et al. 2017): an image that activates a unit only at
one exact pixel alignment is high-frequency noise; random small transforms each step
make the optimiser find patterns that survive them. All three are one affine map per
image, applied by ``affine_grid`` / ``grid_sample`` (reflection padding, so no grey
borders appear at the edges of a rotated or shrunk image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TransformSpec:
    """Ranges of the random transforms; defaults are SCIENCE.md §5's."""

    jitter_px_at_224: float = 8.0  # ±8 px at 224 px, scaled linearly to the image size
    scale: tuple[float, float] = (0.9, 1.1)  # uniform zoom factor range
    rotate_deg: float = 5.0  # ± degrees

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"TransformSpec.scale={self.scale!r}: need 0 < low <= high, e.g. (0.9, 1.1)")
        if self.jitter_px_at_224 < 0 or self.rotate_deg < 0:
            raise ValueError(
                f"TransformSpec: jitter_px_at_224={self.jitter_px_at_224}, rotate_deg={self.rotate_deg} "
                "must be >= 0 (they are ± ranges)"
            )

    def jitter_px(self, size: int) -> float:
        return self.jitter_px_at_224 * size / 224.0


def draw_uniforms(generators: list[torch.Generator]) -> torch.Tensor:
    """``[n, 4]`` uniforms, row ``i`` from ``generators[i]`` (CPU generators: the same draws on every device).

    One generator per image keeps an image's transforms independent of which other
    images share its batch, so rendering units alone or together gives the same result.
    """
    return torch.stack([torch.rand(4, generator=g, dtype=torch.float64) for g in generators])


def random_affine(u: torch.Tensor, h: int, w: int, spec: TransformSpec) -> torch.Tensor:
    """``[n, 2, 3]`` affine matrices (``affine_grid``'s normalised coordinates) from uniforms ``u`` ``[n, 4]``."""
    lo, hi = spec.scale
    zoom = lo + (hi - lo) * u[:, 0]
    angle = math.radians(spec.rotate_deg) * (2 * u[:, 1] - 1)
    # Pixels -> normalised coordinates: the image spans [-1, 1], i.e. 2 / size per pixel.
    tx = spec.jitter_px(w) * (2 * u[:, 2] - 1) * 2.0 / w
    ty = spec.jitter_px(h) * (2 * u[:, 3] - 1) * 2.0 / h
    # affine_grid maps output to input coordinates: sampling at (R / zoom) x + t shows the image
    # zoomed by `zoom`, rotated by `angle` and shifted by -t.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1)
    return theta.float()


def apply_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp ``[n, c, h, w]`` by per-image ``theta`` ``[n, 2, 3]``; same shape out, differentiable in ``images``."""
    if images.dim() != 4 or theta.shape != (images.shape[0], 2, 3):
        raise ValueError(
            f"apply_affine: images {tuple(images.shape)} and theta {tuple(theta.shape)} do not fit; "
            "expected [n, c, h, w] and [n, 2, 3]"
        )
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_transform(
    images: torch.Tensor, spec: TransformSpec, generators: list[torch.Generator]
) -> torch.Tensor:
    """One random jitter + scale + rotation per image (a fresh draw from its generator on every call)."""
    if len(generators) != images.shape[0]:
        raise ValueError(f"random_transform: {images.shape[0]} images but {len(generators)} generators")
    _, _, h, w = images.shape
    return apply_affine(images, random_affine(draw_uniforms(generators), h, w, spec))
