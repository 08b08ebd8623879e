"""The metric registry: what each reported metric is, its report label, and which way means change.

A record, not code: the formulas live in :mod:`shared.metrics.interp` (SCIENCE.md §3); what the
rest of the system must know about a metric (its column label, whether a larger value means the
interpretation moved more) is declared here once, so reports and families can refer to metrics
by name. ``register_metric`` raises on a duplicate name, as every registry here does.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    """One registered metric."""

    name: str  # the key in metrics tables, MLflow and report rows, e.g. "clip_delta"
    description: str  # one line: what it measures (SCIENCE.md §3)
    label: str  # column header in reports, e.g. "CLIP-δ"
    higher_is_change: bool  # True: a larger value means the attack changed more


METRICS: Registry[MetricInfo] = Registry("metric")


def register_metric(name: str, *, description: str, label: str, higher_is_change: bool) -> MetricInfo:
    """Register a metric record under ``name`` (a duplicate raises RegistryError); returns the record."""
    if not description or "\n" in description:
        raise ValueError(f"register_metric({name!r}): description must be one non-empty line")
    info = MetricInfo(name, description, label, higher_is_change)
    METRICS.register(name)(info)
    return info


def get_metric(name: str) -> MetricInfo:
    """The record; an unknown name raises RegistryError listing the valid ones."""
    return METRICS.get(name)


def metric_names() -> list[str]:
    return METRICS.names()


# SCIENCE.md §3: (name, label, higher_is_change, description). Accuracy: lower (a larger drop) is change.
_BUILTIN = (
    ("clip_delta", "CLIP-δ", True, "semantic change of a unit's top-k images, relative to other units' (CLIP)"),
    ("kendall_tau", "Kendall-τ", False, "Kendall τ_b of a unit's scores over D_τ before vs after (1: same ranking)"),
    ("clip_w", "CLIP-W", True, "best match of a unit's new top-k among other units' old ones, over the old best"),
    ("kendall_tau_w", "Kτ-W", True, "best τ of a unit's old scores with another unit's new ones, over the old best"),
    ("topk_overlap", "top-k overlap", False, "share of a unit's initial top-k images still in its final top-k"),
    ("acc", "Acc", False, "top-1 accuracy on the validation split after the attack, in %"),
    ("delta_acc", "ΔAcc pp", False, "accuracy after minus before the attack, in percentage points"),
)  # fmt: skip
for _name, _label, _higher, _description in _BUILTIN:
    register_metric(_name, label=_label, higher_is_change=_higher, description=_description)
