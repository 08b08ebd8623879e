"""The sweep-level figures: every sweep gets them, pruned or not, as PNG and vector PDF.

- ``sweep_metrics_{split}``: the thesis's Table 3.1 metrics (CLIP-δ, Kendall-τ, their
  whack-a-mole variants CLIP-W and Kτ-W, ΔAcc) per attack, one bar per (model, pruning,
  layer); the bar is the mean over the sweep's seeds, the error bar their standard deviation
  (when a cell has ≥ 2 seeds). One figure per split (``train`` = the attacked set).
- ``sweep_fsr_{family}``: for families with a fooling-success table (saliency: Heo et al.),
  FSR per (fooling, tested interpreter) and ΔAcc per fooling, seeds as error bars.

Fed by the same rows ``vizsweep report`` prints (:func:`orchestrator.report.report_rows`);
written under ``{store}/sweeps/<id>/report/`` and logged to the sweep's parent MLflow run.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.report import SPLIT_ORDER, report_rows, standard_rows
from orchestrator.tracking import client, find_parent_run
from shared import store
from shared.attacks import attack_order
from shared.figures import FORMATS, close, figure_bytes, pyplot

METRICS = (
    ("clip_delta", "CLIP-δ"), ("kendall_tau", "Kendall-τ"), ("clip_w", "CLIP-W"), ("kendall_tau_w", "Kτ-W"),
    ("delta_acc", "ΔAcc (pp)"),
)  # fmt: skip
REPORT_DIR = "report"  # {store}/sweeps/<id>/report/, and the parent run's artifact folder


def _values(rows: Sequence[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any]) -> list[float]:
    out = []
    for r in rows:
        v = key(r)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out.append(float(v))
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: no error bar from one seed)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


Row = Mapping[str, Any]


def _bars(
    ax: Any,
    rows: Sequence[Row],
    group_of: Callable[[Row], str],
    groups: Sequence[str],
    series: Sequence[tuple[str, Callable[[Row], Any]]],
    scale: float = 1.0,
) -> list[int]:
    """Grouped bars: x = ``groups``; per series (label, value of a row, None: not in the series) one
    bar per group, the mean over the rows of that cell (its seeds), an error bar where a cell has ≥ 2
    values. Returns the number of values of each drawn cell."""
    width = 0.8 / max(len(series), 1)
    cells = []
    for i, (label, value) in enumerate(series):
        xs, ys, es = [], [], []
        for g, group in enumerate(groups):
            vals = _values([r for r in rows if group_of(r) == group], value)
            if vals:
                m, sd = mean_sd([scale * v for v in vals])
                xs.append(g - 0.4 + width * (i + 0.5))
                ys.append(m)
                es.append(sd)
                cells.append(len(vals))
        if not xs:
            continue
        err = [float("nan") if e is None else e for e in es] if any(e is not None for e in es) else None
        ax.bar(xs, ys, width * 0.95, yerr=err, capsize=2, label=label, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(groups)), list(groups), rotation=30, ha="right", fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.grid(axis="y", alpha=0.3)
    return cells


def _legend(fig: Any, axes: Sequence[Any], title: str) -> None:
    """One legend for all panels, outside them (a series missing from one panel still gets its entry)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=6, title=title,
               title_fontsize=6)  # fmt: skip


def _variant(row: Mapping[str, Any]) -> str:
    method, rate = row.get("prune_method"), row.get("prune_rate")
    prune = "" if method in (None, "none") else f" {method} {rate:g}" if rate is not None else f" {method}"
    return f"{row.get('model')}{prune}"


def _seeds_note(cells: Sequence[int]) -> str:
    most = max(cells, default=1)
    return f"mean ± s.d. over {most} seeds" if most >= 2 else "one seed (no error bars)"


def standard_figures(rows: Sequence[Mapping[str, Any]], sweep_id: str) -> dict[str, Any]:
    """``sweep_metrics_{split}`` -> Figure, one per split of the standard rows (none without them)."""
    plt = pyplot()
    rows = standard_rows(rows)
    splits = sorted({r.get("split") for r in rows}, key=lambda s: (s is not None, _rank(s)))
    out = {}
    for split in splits:
        mine = [r for r in rows if r.get("split") == split]
        attacks = sorted({str(r.get("attack")) for r in mine}, key=lambda a: (attack_order(a), a))
        names = sorted({(_variant(r), str(r.get("layer"))) for r in mine})
        keeps = [(f"{v}, {layer}", _is(v, layer)) for v, layer in names]
        fig, axes = plt.subplots(1, len(METRICS), figsize=(2.9 * len(METRICS), 3.3), constrained_layout=True)
        cells: list[int] = []
        for ax, (key, label) in zip(axes, METRICS):
            series = [(name, _only(keep, key)) for name, keep in keeps]
            cells += _bars(ax, mine, _attack, attacks, series)
            ax.set_title(label, fontsize=9)
        _legend(fig, axes, "model, layer")
        where = "attacked set" if split == "train" else f"{split} split" if split else "attacked set"
        fig.suptitle(f"Sweep {sweep_id}: Table 3.1 metrics per attack and layer ({where}; {_seeds_note(cells)})",
                     fontsize=9)  # fmt: skip
        out[f"sweep_metrics_{split or 'all'}"] = fig
    return out


def _attack(row: Row) -> str:
    return str(row.get("attack"))


def _fooling(row: Row) -> str:
    """A fooling as the x axis names it: the attack and the interpreter it fooled."""
    return f"{row.get('attack')}" + (f" ({row['interpreter']})" if row.get("interpreter") else "")


def _only(keep: Callable[[Row], bool], key: str) -> Callable[[Row], Any]:
    """A series' value: ``row[key]`` for the rows ``keep`` admits, None for the others."""
    return lambda r: r.get(key) if keep(r) else None


def _rank(split: str | None) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), str(split))


def _is(variant: str, layer: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda r: _variant(r) == variant and str(r.get("layer")) == layer


def fsr_figures(rows: Sequence[Mapping[str, Any]], sweep_id: str) -> dict[str, Any]:
    """``sweep_fsr_{family}`` -> Figure for the rows of families that report an ``fsr`` per interpreter."""
    plt = pyplot()
    by_table: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("table") and isinstance(r.get("fsr"), Mapping):
            by_table.setdefault(str(r["table"]), []).append(r)
    out = {}
    for table, mine in by_table.items():
        foolings = sorted({_fooling(r) for r in mine}, key=lambda f: (attack_order(f.split(" ")[0]), f))
        tested = sorted({i for r in mine for i in r["fsr"]})
        fig, (ax_f, ax_a) = plt.subplots(
            1, 2, figsize=(11, 3.6), width_ratios=(2, 1), constrained_layout=True
        )
        per_tested = [(n, lambda r, n=n: r["fsr"].get(n)) for n in tested]  # a series per tested interpreter
        cells = _bars(ax_f, mine, _fooling, foolings, per_tested, 100.0)
        ax_f.set_title("fooling success rate (%) per tested interpreter", fontsize=9)
        ax_f.legend(
            fontsize=6, title="interpreter tested", title_fontsize=6, loc="upper left", bbox_to_anchor=(1, 1)
        )
        variants = [
            (v, _only(lambda r, v=v: _variant(r) == v, "delta_acc"))
            for v in sorted({_variant(r) for r in mine})
        ]
        _bars(ax_a, mine, _fooling, foolings, variants)
        ax_a.set_title("ΔAcc top-1 (pp)", fontsize=9)
        fig.suptitle(f"Sweep {sweep_id}: {table} fooling ({_seeds_note(cells)})", fontsize=9)
        out[f"sweep_fsr_{table}"] = fig
    return out


def sweep_figures(rows: Sequence[Mapping[str, Any]], sweep_id: str) -> dict[str, Any]:
    """Every sweep-level figure of ``rows`` by file stem (the caller closes them)."""
    return {**standard_figures(rows, sweep_id), **fsr_figures(rows, sweep_id)}


FIGURES_KEY = "_figures.json"  # in the report folder: what the figures there were drawn from
FIGURES_VERSION = "sweep-figures-v1"  # bump when a figure's drawing changes


def write_sweep_figures(
    store_uri: str, sweep_id: str, tracking_uri: str, rows: Sequence[Mapping[str, Any]] | None = None
) -> list[str]:
    """Write the figures as PNG and PDF under ``{store}/sweeps/<id>/report/`` and log them to the
    parent run (artifact folder ``report``); ``rows`` default to the report's. Returns the paths.

    Drawing them costs seconds (a vector PDF embeds its fonts): when the rows and the parent run are
    those the stored figures were drawn from (a relaunch that trained nothing), they are kept as they are.
    """
    rows = report_rows(tracking_uri, sweep_id) if rows is None else rows
    folder = store.join(store_uri, "sweeps", sweep_id, REPORT_DIR)
    parent = find_parent_run(tracking_uri, sweep_id)
    key = store.content_key(
        FIGURES_VERSION, store.json_plain(list(rows)), parent.info.run_id if parent else None
    )
    marker = store.join(folder, FIGURES_KEY)
    drawn = store.read_json(marker) if store.exists(marker) else {}
    if drawn.get("key") == key and all(store.exists(store.join(folder, f)) for f in drawn.get("files", [])):
        return [store.local_path(store.join(folder, f)) or store.join(folder, f) for f in drawn["files"]]
    figs = sweep_figures(rows, sweep_id)
    out, files = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for stem, fig in figs.items():
            try:
                for fmt in FORMATS:
                    data = figure_bytes(fig, fmt)
                    dest = store.join(folder, f"{stem}.{fmt}")
                    store.write_bytes(dest, data)
                    out.append(store.local_path(dest) or dest)
                    files.append(f"{stem}.{fmt}")
                    if parent is not None:
                        local = os.path.join(tmp, f"{stem}.{fmt}")
                        with open(local, "wb") as f:
                            f.write(data)
                        client(tracking_uri).log_artifact(parent.info.run_id, local, REPORT_DIR)
            finally:
                close(fig)
    store.write_json(marker, {"key": key, "files": files})
    return out
