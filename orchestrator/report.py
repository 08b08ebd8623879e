"""The thesis's result table (Table 3.1) from a sweep's finished MLflow runs.

MLflow is the record of a sweep: the report reads the trial runs back rather
than the store, so it shows exactly what the UI shows. Only FINISHED runs
count; a run that lacks a metric still gets its row, with a gap, because a
report that crashes on one odd run is worse than one with an empty cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Run

from orchestrator.tracking import find_child_runs
from shared.pruners import PRUNERS

PARAM_KEYS = ("model", "prune_method", "prune_rate", "layer", "attack")
METRIC_KEYS = ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap", "acc", "delta_acc")
COLUMNS = PARAM_KEYS + METRIC_KEYS
VARIANT_KEYS = ("weight_pruning_rate", "filter_pruning_rate", "fine_tuned_acc")  # params of a pruned variant
ATTACK_ORDER = ("finetune", "push-down", "push-up", "push-up-max")  # the thesis's order: the control first
FORMATS = ("md", "csv", "json")

# Markdown header -> how a row fills the cell
_MD_HEADER = (
    "Model", "Prune", "Layer", "Attack", "CLIP-δ", "Kendall-τ", "CLIP-W", "Kτ-W", "top-k overlap", "Acc",
    "ΔAcc pp",
)  # fmt: skip


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def row_of(run: Run) -> dict[str, Any]:
    """One table row from a trial run: its params and final metrics, nothing else."""
    params, metrics = run.data.params, run.data.metrics
    row: dict[str, Any] = {k: params.get(k) for k in PARAM_KEYS}
    row["prune_rate"] = _float(row["prune_rate"])
    if params.get("prune_priority"):  # group pruning's two settings share method and rate
        row["prune_priority"] = params["prune_priority"]
    row.update({k: _float(metrics.get(k)) for k in METRIC_KEYS})
    # for the pruning tables (orchestrator.report_pruning); not columns of the main table
    row["acc_init"] = _float(metrics.get("acc_init"))
    row.update({k: _float(params.get(k)) for k in VARIANT_KEYS})
    return row


def _sort_key(row: Mapping[str, Any]) -> tuple:
    """model, prune method (unpruned first), rate, layer, then attacks in the thesis's order (others after)."""

    def text(v: Any) -> tuple[bool, str]:
        return (v is None, "" if v is None else str(v))

    attack = row.get("attack")
    rank = ATTACK_ORDER.index(attack) if attack in ATTACK_ORDER else len(ATTACK_ORDER)
    rate = row.get("prune_rate")
    return (
        text(row.get("model")), _method_rank(row.get("prune_method")), (rate is None, rate or 0.0),
        text(row.get("layer")), rank, text(attack),
    )  # fmt: skip


def _method_rank(method: Any) -> tuple[int, str]:
    """Pruning methods in their declared display order (``Pruner.order``: the unpruned control
    first); a method no longer registered after them."""
    order = PRUNERS.get(method).order if isinstance(method, str) and method in PRUNERS else math.inf
    return (order, str(method or ""))


def sort_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for r in sorted(rows, key=_sort_key)]


def report_rows(tracking_uri: str, sweep_id: str) -> list[dict[str, Any]]:
    """The sweep's FINISHED trial runs as table rows (keys: :data:`COLUMNS`), in the thesis's order."""
    return sort_rows([row_of(r) for r in find_child_runs(tracking_uri, sweep_id, status="FINISHED")])


# --------------------------------------------------------------------------- rendering


def _num(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _prune(row: Mapping[str, Any]) -> str:
    method, rate = row.get("prune_method"), row.get("prune_rate")
    if method is None and rate is None:
        return "—"
    label = " ".join(p for p in (method, None if rate is None else f"{rate:g}") if p)
    return f"{label} ({row['prune_priority']})" if row.get("prune_priority") else label


def _md_cells(row: Mapping[str, Any]) -> list[str]:
    return [
        str(row.get("model") or "—"), _prune(row), str(row.get("layer") or "—"), str(row.get("attack") or "—"),
        *(_num(row.get(k)) for k in METRIC_KEYS[:-1]), _num(row.get("delta_acc"), signed=True),
    ]  # fmt: skip


def render_md(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table like the thesis's Table 3.1 (3 decimals, ΔAcc in signed percentage points)."""
    lines = ["| " + " | ".join(_MD_HEADER) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 7) + "|"]
    lines += ["| " + " | ".join(_md_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The 12 keys as header; a missing value is an empty cell; numbers at full precision."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS} for r in rows)
    return buf.getvalue()


def render_json(rows: Sequence[Mapping[str, Any]], sweep: str | None = None) -> str:
    """One document, ``{"sweep": id, "rows": [...]}``; missing values (and NaN, not JSON) are null."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and math.isnan(v) else v

    doc = {"sweep": sweep, "rows": [{k: clean(r.get(k)) for k in COLUMNS} for r in rows]}
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def render(rows: Sequence[Mapping[str, Any]], fmt: str = "md", sweep: str | None = None) -> str:
    """The rows as ``md``, ``csv`` or ``json`` (``sweep`` names the sweep in the JSON document)."""
    if fmt == "md":
        return render_md(rows)
    if fmt == "csv":
        return render_csv(rows)
    if fmt == "json":
        return render_json(rows, sweep)
    raise ValueError(f"report format must be one of {FORMATS}, not {fmt!r}")
