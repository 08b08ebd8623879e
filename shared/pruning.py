"""Pruning defenses (SCIENCE.md §4): the former module, kept so existing imports work.

The methods now live in :mod:`shared.pruners` (one plugin per method, registry ``PRUNERS``) and
index-map surgery in :mod:`shared.models.surgery`; import from there in new code.
"""

from shared.models.surgery import IndexMap, apply_index_map
from shared.pruners import (
    PRIORITIES,
    check_method,
    check_priority,
    check_rate,
    conv_for,
    filter_sparsity,
    group_prune,
    make_permanent,
    norm_prune,
    output_layers,
    pruner_names,
    rank_by_clip_delta,
    sparsity_regularizer,
    vulnerability_prune,
    weight_pruning_rate,
    weight_sparsity,
)

METHODS = tuple(pruner_names())  # none, norm, group, vulnerability

__all__ = [
    "METHODS",
    "PRIORITIES",
    "IndexMap",
    "apply_index_map",
    "check_method",
    "check_priority",
    "check_rate",
    "conv_for",
    "filter_sparsity",
    "group_prune",
    "make_permanent",
    "norm_prune",
    "output_layers",
    "rank_by_clip_delta",
    "sparsity_regularizer",
    "vulnerability_prune",
    "weight_pruning_rate",
    "weight_sparsity",
]
