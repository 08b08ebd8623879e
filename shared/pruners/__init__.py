"""Pruning defenses (SCIENCE.md §4) as plugins: one module per method, one registry.

``PRUNERS`` maps a method name to its :class:`Pruner` class; what the rest of the system must
know about a method (settings rules, report tables, ranking run, cost, order) is declared on
the class. Importing this package registers the built-in methods: none, norm, group, vulnerability.
"""

from shared.pruners import group, none, norm, vulnerability  # noqa: F401  (register the methods)
from shared.pruners.base import (
    PRIORITIES,
    PRUNERS,
    Problems,
    PruneContext,
    Pruner,
    ReportTable,
    check_method,
    check_priority,
    check_rate,
    get_pruner,
    pruner_names,
    register_pruner,
    report_tables,
    table_of,
)
from shared.pruners.group import group_prune, output_layers, sparsity_regularizer
from shared.pruners.measure import filter_sparsity, make_permanent, weight_pruning_rate, weight_sparsity
from shared.pruners.norm import norm_prune
from shared.pruners.vulnerability import conv_for, rank_by_clip_delta, vulnerability_prune

__all__ = [
    "PRIORITIES",
    "PRUNERS",
    "Problems",
    "PruneContext",
    "Pruner",
    "ReportTable",
    "check_method",
    "check_priority",
    "check_rate",
    "conv_for",
    "filter_sparsity",
    "get_pruner",
    "group_prune",
    "make_permanent",
    "norm_prune",
    "output_layers",
    "pruner_names",
    "rank_by_clip_delta",
    "register_pruner",
    "report_tables",
    "sparsity_regularizer",
    "table_of",
    "vulnerability_prune",
    "weight_pruning_rate",
    "weight_sparsity",
]
