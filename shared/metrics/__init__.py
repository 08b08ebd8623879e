"""Interpretation metrics of SCIENCE.md §3: Kendall τ_b, Kτ-W, CLIP-δ, CLIP-W, top-k overlap, accuracy."""

from shared.metrics.interp import (
    METRIC_COLUMNS,
    accuracy,
    clip_delta,
    clip_matrix,
    clip_w,
    delta_acc,
    kendall_per_unit,
    kendall_tau_w,
    layer_means,
    topk_indices,
    topk_overlap,
    unit_metrics,
)
from shared.metrics.kendall import kendall_tau_b, kendall_tau_diag, kendall_tau_matrix

__all__ = [
    "METRIC_COLUMNS",
    "accuracy",
    "clip_delta",
    "clip_matrix",
    "clip_w",
    "delta_acc",
    "kendall_per_unit",
    "kendall_tau_b",
    "kendall_tau_diag",
    "kendall_tau_matrix",
    "kendall_tau_w",
    "layer_means",
    "topk_indices",
    "topk_overlap",
    "unit_metrics",
]
