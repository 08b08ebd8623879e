"""The MLflow runs table a sweep opens on: its trials grouped by attack, the columns that matter first.

MLflow 3's runs table shows no param or metric column by default and nests child runs, collapsed,
under their parent. Its one supported way to open the table in a given state is a *shared view*:
an experiment tag ``mlflow.sharedViewState.<key>`` holding the view as JSON (search filter, sort,
selected columns, their order, grouping), loaded by ``#/experiments/<id>/runs?viewStateShareKey=
<key>`` (the UI's "Share" button writes the same tag). Grouped by the ``attack`` param, every trial
is a visible row; the parent run (the sweep's summary table and figures) is the last group.
Which metrics are columns comes from the families' ``report_columns``, never from a family's name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote

from mlflow.entities import Run

from orchestrator.tracking import TAG_SWEEP, client, find_child_runs, search_literal
from shared.attacks import FAMILIES

VIEW_TAG = "mlflow.sharedViewState."
# A view the UI reads but MLflow does not validate: it shows whatever columns the JSON names.
PARAMS_FIRST = ("model", "layer", "attack")
PARAMS_LAST = ("prune_method", "prune_rate", "seed")
GROUP_BY = "attack"
MAX_METRIC_COLUMNS = 16  # beyond this a table is scrolled anyway; the report has everything


def view_key(sweep_id: str) -> str:
    """The share key of a sweep's view (the URL's ``viewStateShareKey``)."""
    return f"vizsweep-{sweep_id}"


def runs_view_url(server_uri: str, experiment_id: str, sweep_id: str) -> str:
    """The runs table in the sweep's shared view, in the UI's model-training mode (not GenAI)."""
    base = f"{server_uri.rstrip('/')}/#/experiments/{quote(str(experiment_id), safe='')}/runs"
    return f"{base}?viewStateShareKey={quote(view_key(sweep_id), safe='')}&workflowType=machine_learning"


def metric_columns(runs: Iterable[Run]) -> list[str]:
    """The metrics shown, in the families' report order (registration order across families).

    A column logged per split (``train.clip_delta``) is shown for the first split, then the
    run-level ones (``delta_acc``, ``fsr.gradcam``), then the other splits: the first screen holds
    one split's CLIP-δ and Kendall-τ next to the accuracy, not two splits of one metric.
    """
    present = {k for r in runs for k in r.data.metrics if k.count(".") <= 1}
    names = list(dict.fromkeys(c for fam in FAMILIES.in_order() for c in fam.report_columns))
    splits = sorted({k.split(".")[0] for k in present if k.split(".")[-1] in names and "." in k})
    by_split = {s: [f"{s}.{n}" for n in names if f"{s}.{n}" in present] for s in splits}
    run_level = [k for n in names for k in sorted(present)
                 if (k == n and not any(f"{s}.{n}" in present for s in splits)) or k.startswith(f"{n}.")]  # fmt: skip
    first, rest = splits[:1], splits[1:]
    out = [c for s in first for c in by_split[s]] + run_level + [c for s in rest for c in by_split[s]]
    return list(dict.fromkeys(out))[:MAX_METRIC_COLUMNS]


def view_state(sweep_id: str, runs: Sequence[Run]) -> dict:
    """The shared view's JSON: the sweep's runs, oldest first, grouped by attack, chosen columns first."""
    params = {k for r in runs for k in r.data.params}
    first = [f"params.`{p}`" for p in PARAMS_FIRST if p in params]
    last = [f"params.`{p}`" for p in PARAMS_LAST if p in params]
    columns = first + [f"metrics.`{m}`" for m in metric_columns(runs)] + last
    state: dict = {
        "searchFilter": f"tags.`{TAG_SWEEP}` = {search_literal(sweep_id)}",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": columns,
    }
    if GROUP_BY in params:
        state["groupBy"] = {"aggregateFunction": "average",
                            "groupByKeys": [{"mode": "param", "groupByData": GROUP_BY}]}  # fmt: skip
    return state


def share_sweep_view(tracking_uri: str, experiment_id: str, sweep_id: str) -> dict:
    """Write (or refresh) the sweep's shared view from its runs as they are now; returns the view."""
    runs = find_child_runs(tracking_uri, sweep_id)
    state = view_state(sweep_id, runs)
    client(tracking_uri).set_experiment_tag(experiment_id, VIEW_TAG + view_key(sweep_id), json.dumps(state))
    return state


def read_view(tracking_uri: str, experiment_id: str, sweep_id: str) -> Mapping | None:
    """The sweep's shared view as stored, or None."""
    tags = client(tracking_uri).get_experiment(experiment_id).tags
    text = tags.get(VIEW_TAG + view_key(sweep_id))
    return json.loads(text) if text else None
