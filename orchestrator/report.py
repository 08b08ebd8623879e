"""The thesis's result table (Table 3.1) from a sweep's finished MLflow runs.

MLflow is the record of a sweep: the report reads the trial runs back rather
than the store, so it shows exactly what the UI shows. Only FINISHED runs
count; a run that lacks a metric still gets its row, with a gap, because a
report that crashes on one odd run is worse than one with an empty cell.

One row per (run, split) (SCIENCE.md §3): ``split`` names where the top-k metrics come from
(``train`` = the attacked set, ``val`` = generalization), read from the run's
``{split}.{metric}`` finals; Acc and ΔAcc are on V for both. A run logged before the splits
were recorded gives one row with ``split`` None, from its unprefixed finals.
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
from shared.attacks import FAMILIES, attack_order
from shared.pruners import PRUNERS

PARAM_KEYS = ("model", "prune_method", "prune_rate", "layer", "attack")
METRIC_KEYS = ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap", "acc", "delta_acc")
UNIT_KEYS = ("units_dead_init", "units_killed", "decoy_top5")  # §3 dead units; decoy_top5: decoy attacks
RUN_KEYS = ("alpha_final", "steps", "run_id")  # α at the end, steps run, the MLflow run (its link in the UI)
COLUMNS = ("family", *PARAM_KEYS, "seed", "split", *METRIC_KEYS, *UNIT_KEYS, *RUN_KEYS)
SPLIT_KEYS = (*METRIC_KEYS[:5], *UNIT_KEYS)  # per split; acc and delta_acc are on V, one value per run
COUNT_KEYS = ("units_dead_init", "units_killed")
SPLIT_ORDER = ("train", "val")  # the attacked set first
VARIANT_KEYS = ("weight_pruning_rate", "filter_pruning_rate", "fine_tuned_acc")  # params of a pruned variant
FORMATS = ("md", "csv", "json")

# The unit of each numeric column (the JSON document's "units"; the Markdown headers say them too).
# MLflow's per-step ``eval_acc`` is a fraction; the report's ``acc`` is in %, ``delta_acc`` in points.
UNITS = {
    "prune_rate": "fraction of weights or filters pruned (vulnerability: filters)", "clip_delta": "1",
    "kendall_tau": "1", "clip_w": "1", "kendall_tau_w": "1", "topk_overlap": "fraction of k", "acc": "%",
    "delta_acc": "percentage points", "units_dead_init": "units", "units_killed": "units",
    "decoy_top5": "fraction of alive attacked units", "alpha_final": "1", "steps": "optimizer steps",
}  # fmt: skip

# Markdown header -> how a row fills the cell ("Decoy top-5" only when a row has it)
_MD_HEADER = (
    "Model", "Prune", "Layer", "Attack", "Seed", "Split", "CLIP-δ", "Kendall-τ", "CLIP-W", "Kτ-W",
    "top-k overlap", "Acc %", "ΔAcc pp", "Dead", "Killed",
)  # fmt: skip
_MD_TAIL = ("α end", "Steps", "MLflow run")
_MD_TEXT = 6  # the first columns are text (left-aligned), the rest numbers


def _float(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _splits(metrics: Mapping[str, float]) -> list[str | None]:
    """The split roles a run logged ``{split}.{metric}`` finals for; [None] for a run without any."""
    found = {k.split(".")[0] for k in metrics if k.count(".") == 1 and k.split(".")[1] in SPLIT_KEYS}
    return sorted(found, key=_split_rank) or [None]


def _split_rank(split: str | None) -> tuple[int, str]:
    if split is None:  # before splits were recorded, the unprefixed finals were the attacked set's
        return (0, "")
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def rows_of(run: Run) -> list[dict[str, Any]]:
    """The table rows of a trial run, one per split: its params and final metrics, nothing else."""
    params, metrics = run.data.params, run.data.metrics
    rows = []
    for split in _splits(metrics):
        row: dict[str, Any] = {"family": params.get("family"), **{k: params.get(k) for k in PARAM_KEYS}}
        row["prune_rate"] = _float(row["prune_rate"])
        seed = _float(params.get("seed"))
        row["seed"] = None if seed is None else int(seed)
        row["split"] = split
        for k in (*METRIC_KEYS, *UNIT_KEYS):
            row[k] = _float(metrics.get(f"{split}.{k}" if split and k in SPLIT_KEYS else k))
        row.update({k: None if row[k] is None else int(row[k]) for k in COUNT_KEYS})
        row["alpha_final"] = _float(metrics.get("alpha_final"))
        steps = _float(metrics.get("steps"))
        row["steps"] = None if steps is None else int(steps)
        row["run_id"] = run.info.run_id
        if params.get("prune_priority"):  # group pruning's two settings share method and rate
            row["prune_priority"] = params["prune_priority"]
        # for the pruning tables (orchestrator.report_pruning); not columns of the main table
        row["acc_init"] = _float(metrics.get("acc_init"))
        row.update({k: _float(params.get(k)) for k in VARIANT_KEYS})
        rows.append(row)
    return rows


def attacked_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the attacked set (split ``train``; rows without a split count as such)."""
    return [r for r in standard_rows(rows) if r.get("split") in ("train", None)]


def _sort_key(row: Mapping[str, Any]) -> tuple:
    """split (the attacked set first), model, prune method (unpruned first), rate, layer, attacks in
    the thesis's order (others after), then seeds: the first block is the thesis's table, the next its generalization."""

    def text(v: Any) -> tuple[bool, str]:
        return (v is None, "" if v is None else str(v))

    attack = row.get("attack")
    rank = attack_order(str(attack))  # as the families declare it: the control first
    rate = row.get("prune_rate")
    return (
        _split_rank(row.get("split")), text(row.get("model")), _method_rank(row.get("prune_method")),
        (rate is None, rate or 0.0), text(row.get("layer")), rank, text(attack), _seed_rank(row.get("seed")),
    )  # fmt: skip


def _seed_rank(seed: Any) -> tuple[bool, float]:
    value = _float(seed)
    return (value is None, value or 0.0)


def _method_rank(method: Any) -> tuple[int, str]:
    """Pruning methods in their declared display order (``Pruner.order``: the unpruned control
    first); a method no longer registered after them."""
    order = PRUNERS.get(method).order if isinstance(method, str) and method in PRUNERS else math.inf
    return (order, str(method or ""))


def sort_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for r in sorted(rows, key=_sort_key)]


def report_rows(tracking_uri: str, sweep_id: str) -> list[dict[str, Any]]:
    """The sweep's FINISHED trial runs as table rows: the standard per-split rows (keys :data:`COLUMNS`)
    in the thesis's order, then the rows of families that make their own (``family`` names them)."""
    runs = find_child_runs(tracking_uri, sweep_id, status="FINISHED")
    standard, own = [], []
    for r in runs:
        fam = FAMILIES.get(r.data.params["family"]) if r.data.params.get("family") in FAMILIES else None
        rows = fam.report_rows(r.data.params, r.data.metrics) if fam is not None else None
        if rows is None:
            standard += rows_of(r)
        else:
            own += [{**row, "table": fam.name} for row in rows]
    own.sort(
        key=lambda row: (
            attack_order(str(row.get("attack"))),
            str(row.get("model")),
            str(row.get("interpreter")),
        )
    )
    return sort_rows(standard) + own


def _own(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows of families with their own table, by family (the others are the standard table's)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("table"):
            out.setdefault(r["table"], []).append(r)
    return out


def standard_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the standard per-split table (rows a family made for its own table say ``table``)."""
    return [r for r in rows if not r.get("table")]


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


def _count(v: Any) -> str:
    return "—" if v is None else str(int(v))


def _md_cells(row: Mapping[str, Any], decoy: bool) -> list[str]:
    alpha = row.get("alpha_final")
    return [
        str(row.get("model") or "—"), _prune(row), str(row.get("layer") or "—"), str(row.get("attack") or "—"),
        _count(row.get("seed")), str(row.get("split") or "—"), *(_num(row.get(k)) for k in METRIC_KEYS[:-1]),
        _num(row.get("delta_acc"), signed=True), *(_count(row.get(k)) for k in COUNT_KEYS),
        *([_num(row.get("decoy_top5"))] if decoy else []),
        "—" if alpha is None or alpha != alpha else f"{alpha:.4g}", _count(row.get("steps")),
        str(row.get("run_id") or "—"),
    ]  # fmt: skip


def render_md(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table like the thesis's Table 3.1 (3 decimals, Acc in %, ΔAcc in signed percentage
    points), with the seed, the split, the dead and killed unit counts, when a row has it decoy_top5, then
    α at the end, the steps run and the MLflow run id; then each family's own table (e.g. Heo Table 1)."""
    own = _own(rows)
    rows = standard_rows(rows)
    parts = [_render_standard(rows)] if rows or not own else []
    for fam, mine in own.items():
        f = FAMILIES.get(fam)
        parts.append(f"**{f.description.strip().splitlines()[0]}**\n\n{f.render_markdown(mine)}")
    return "\n".join(parts)


def _render_standard(rows: Sequence[Mapping[str, Any]]) -> str:
    decoy = any(r.get("decoy_top5") is not None for r in rows)
    header = [*_MD_HEADER, *(["Decoy top-5"] if decoy else []), *_MD_TAIL]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * _MD_TEXT + ["---:"] * (len(header) - _MD_TEXT - 1) + ["---"]) + "|",
    ]
    lines += ["| " + " | ".join(_md_cells(r, decoy)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """:data:`COLUMNS` as header; a missing value is an empty cell; numbers at full precision."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS} for r in standard_rows(rows)
    )
    for mine in _own(rows).values():  # a family's own table follows, with its own header
        flat = [_flat(r) for r in mine]
        keys = list(dict.fromkeys(k for r in flat for k in r))
        buf.write("\n")
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in keys} for r in flat)
    return buf.getvalue()


def _flat(row: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings as ``key.sub`` columns (a family row's ``fsr``: one column per tested interpreter)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Mapping):
            out |= {f"{k}.{sub}": x for sub, x in v.items()}
        else:
            out[k] = v
    return out


def render_json(rows: Sequence[Mapping[str, Any]], sweep: str | None = None) -> str:
    """One document, ``{"sweep": id, "units": {column: unit}, "rows": [...]}``; missing values (and NaN,
    not JSON) are null."""

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and math.isnan(v) else v

    def own(r: Mapping[str, Any]) -> dict[str, Any]:
        return {
            k: ({s: clean(x) for s, x in v.items()} if isinstance(v, Mapping) else clean(v))
            for k, v in r.items()
        }

    doc = {
        "sweep": sweep,
        "units": UNITS,
        "rows": [{k: clean(r.get(k)) for k in COLUMNS} if "split" in r else own(r) for r in rows],
    }
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
