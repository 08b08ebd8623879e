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

from orchestrator.status import checkpoints_uri, sweep_dir, write_status, write_trial_state
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
    from orchestrator.spec import default_tracking_uri
    from orchestrator.tracking import SweepTracker, TrialRun  # MLflow: only the tests that need it

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


# How many trials of each state write_status_store makes, per 1,000 (the rest are pending).
STATUS_MIX = {"done": 600, "stopped": 50, "failed": 30, "running": 20, "checkpointed": 10}


def write_status_store(store_dir: Path, trials: int, sweep_id: str = SWEEP) -> dict[str, int]:
    """What ``vizsweep status SWEEP`` reads, for ``trials`` trials and no MLflow: spec.json,
    status.json (driver gone), plan.json, the trials' state files and some checkpoint folders.
    Returns the counts status must print (running trials of a gone driver read as started)."""
    sdir = sweep_dir(str(store_dir), sweep_id)
    store.write_json(store.join(sdir, "spec.json"), {"name": sweep_id.rsplit("-", 1)[0]})
    plans = [{"trial_key": f"k{i:05d}", "run_name": f"trial-{i:05d}", "attack_key": f"a{i:05d}"}
             for i in range(trials)]  # fmt: skip
    store.write_json(store.join(sdir, "plan.json"), plans)
    write_status(sdir, sweep_id=sweep_id, state="attacks", trials=trials, driver_pid=None, started=0.0)
    states = [s for s, n in STATUS_MIX.items() for _ in range(n * trials // 1000)]
    for p, state in zip(plans, states, strict=False):
        if state == "checkpointed":
            Path(store.local_path(checkpoints_uri(str(store_dir), p["attack_key"]))).mkdir(parents=True)
        else:
            write_trial_state(sdir, p["trial_key"], p["run_name"], state)
    counts = {s: states.count(s) for s in ("done", "stopped", "failed")}
    counts["started"] = states.count("running") + states.count("checkpointed")
    counts["pending"] = trials - len(states)
    return counts
