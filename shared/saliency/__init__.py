"""Saliency fooling (Heo et al. 2019; SCIENCE.md §6): fooling losses, test losses and the FSR."""

from shared.saliency.fsr import FSR_RANGES, active_test_loss, center_mass_test_loss, fsr, spearman
from shared.saliency.losses import (
    active_loss,
    center_mass_loss,
    center_of_mass,
    frame_mask,
    location_loss,
    topk_loss,
    topk_mask,
)

__all__ = [
    "FSR_RANGES",
    "active_loss",
    "active_test_loss",
    "center_mass_loss",
    "center_mass_test_loss",
    "center_of_mass",
    "frame_mask",
    "fsr",
    "location_loss",
    "spearman",
    "topk_loss",
    "topk_mask",
]
