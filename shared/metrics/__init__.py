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
from shared.metrics.registry import METRICS, MetricInfo, get_metric, metric_names, register_metric

__all__ = [
    "METRICS",
    "METRIC_COLUMNS",
    "MetricInfo",
    "accuracy",
    "clip_delta",
    "clip_matrix",
    "clip_w",
    "delta_acc",
    "get_metric",
    "kendall_per_unit",
    "kendall_tau_b",
    "kendall_tau_diag",
    "kendall_tau_matrix",
    "kendall_tau_w",
    "layer_means",
    "metric_names",
    "register_metric",
    "topk_indices",
    "topk_overlap",
    "unit_metrics",
]
