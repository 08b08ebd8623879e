"""A sweep store written cheaply for tests of the commands that read one: no Ray, no training.

What ``vizsweep status/report/ui`` and the Python API read: ``sweeps/<id>/spec.json`` and
``status.json`` (with the tracking URI and experiment id), and an MLflow sqlite database with the
sweep's parent run and FINISHED trial runs, made through ``orchestrator/tracking.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.spec import default_tracking_uri
from orchestrator.status import sweep_dir, write_status
from orchestrator.tracking import SweepTracker, TrialRun
from shared import store

SWEEP = "quick-0123abcd"


def write_sweep(
    store_dir: Path,
    runs: Sequence[tuple[str, Mapping[str, Any], Mapping[str, float]]],
    sweep_id: str = SWEEP,
    artifacts: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``runs``: (run name, params, final metrics); ``artifacts``: run name -> JSON artifacts
    (file name -> document). Returns the sweep's status (``tracking_uri``, ``experiment_id``)."""
    uri = default_tracking_uri(str(store_dir))
    tracker = SweepTracker(uri, sweep_id.rsplit("-", 1)[0])
    parent = tracker.parent(sweep_id, {"spec": "test"}, {})
    for name, params, final in runs:
        run = TrialRun.open(uri, tracker.experiment_id, parent, f"key-{name}", name, params,
                            {"vizsweep.sweep_id": sweep_id})  # fmt: skip
        for fname, doc in (artifacts or {}).get(name, {}).items():
            path = store_dir / "tmp-artifacts" / run.run_id / fname
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc))
            run.log_artifact(path)
        run.log_final(final)
        run.finish("FINISHED")
    tracker.finish_parent(sweep_id)
    sdir = sweep_dir(str(store_dir), sweep_id)
    store.write_json(store.join(sdir, "spec.json"), {"name": sweep_id.rsplit("-", 1)[0]})
    status = {"sweep_id": sweep_id, "name": sweep_id.rsplit("-", 1)[0], "state": "done",
              "trials": len(runs), "done": len(runs), "tracking_uri": uri,
              "experiment_id": tracker.experiment_id, "started": 0.0}  # fmt: skip
    write_status(sdir, **status)
    return status
