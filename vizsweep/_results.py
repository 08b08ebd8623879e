"""MLflow runs -> the rows of :func:`vizsweep.results` (one per run and split)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FIRST = ("run_id", "run_name", "split")


def param_value(text: str | None) -> Any:
    """MLflow keeps params as text: numbers become numbers, ``None``/``True``/``False`` themselves."""
    if text is None or text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def split_rows(
    run_id: str, run_name: str, params: Mapping[str, str], metrics: Mapping[str, float]
) -> list[dict[str, Any]]:
    """One row per split found in ``{layer}.{split}.{metric}`` keys (layers from the ``layer``
    param, ``+``-joined for a multi-layer scope), else one row with ``split`` None.

    A split row's ``{metric}`` is the mean over the run's layers (as the run's own top-level
    figure is for its primary split); its ``{layer}.{metric}`` keep the per-layer values.
    """
    layers = set(str(params.get("layer") or "").split("+")) - {""}
    per: dict[str, dict[str, dict[str, float]]] = {}  # split -> metric -> layer -> value
    plain: dict[str, float] = {}
    for key, value in metrics.items():
        parts = key.rsplit(".", 2)
        if len(parts) == 3 and parts[0] in layers:
            per.setdefault(parts[1], {}).setdefault(parts[2], {})[parts[0]] = value
        else:
            plain[key] = value
    base = {"run_id": run_id, "run_name": run_name, **{k: param_value(v) for k, v in params.items()}}
    if not per:
        return [{**base, "split": None, **plain}]
    rows = []
    for split in sorted(per):
        row = {**base, "split": split, **plain}
        for name, by_layer in per[split].items():
            row[name] = sum(by_layer.values()) / len(by_layer)
            row.update({f"{layer}.{name}": v for layer, v in by_layer.items()})
        rows.append(row)
    return rows


def frame(runs: Iterable[Any]) -> Any:
    """A DataFrame of the runs' rows, in the report's order (model, pruning, layer, attack)."""
    import pandas as pd

    from orchestrator.report import COLUMNS, sort_rows

    rows = [
        row for r in runs for row in split_rows(r.info.run_id, r.info.run_name, r.data.params, r.data.metrics)
    ]
    rows = sort_rows(rows)
    seen = dict.fromkeys(k for row in rows for k in row)
    lead = [k for k in dict.fromkeys((*FIRST, *COLUMNS, "seed")) if k in seen or k in FIRST]  # each once
    return pd.DataFrame(rows, columns=[*lead, *sorted(k for k in seen if k not in lead)])
