"""Synthetic feature visualisation by activation maximisation (SCIENCE.md §5), pure torch."""

from shared.featureviz.compare import UnitComparison, compare_renderings
from shared.featureviz.param import COLOR_CORRELATION_SVD_SQRT, FourierImage, rfft2d_freqs
from shared.featureviz.render import (
    RenderConfig,
    Rendering,
    layer_activations,
    measure,
    render_units,
    unit_means,
)
from shared.featureviz.transforms import TransformSpec, apply_affine, random_affine, random_transform

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "FourierImage",
    "RenderConfig",
    "Rendering",
    "TransformSpec",
    "UnitComparison",
    "apply_affine",
    "compare_renderings",
    "layer_activations",
    "measure",
    "random_affine",
    "random_transform",
    "render_units",
    "rfft2d_freqs",
    "unit_means",
]
