"""Where a sweep lives in the store and what state it is in (a leaf: imported by the phases)."""

from __future__ import annotations

import time
from typing import Any

from shared import store

TUNE_DIR = "tune"


def sweep_id_for(spec: Any) -> str:
    """A sweep's id: its name plus the content key of its spec (the same spec finds the same sweep)."""
    return f"{spec.name}-{store.content_key(spec.to_dict())[:8]}"


def sweep_dir(store_uri: str, sweep_id: str) -> str:
    return store.join(store_uri, "sweeps", sweep_id)


def write_status(sdir: str, **fields: Any) -> None:
    """Merge ``fields`` into the sweep's status.json (what ``vizsweep status`` shows)."""
    uri = store.join(sdir, "status.json")
    old = store.read_json(uri) if store.exists(uri) else {}
    store.write_json(uri, {**old, **fields, "updated": time.time()})


# --------------------------------------------------------------------------- trial states
# One small file per trial, ``{sweep}/trials/<trial_key>.json``, written by the trial itself (and by
# the driver for trials reused from the store): ``vizsweep status`` reads these and plan.json only,
# so it imports neither torch, Ray nor MLflow and answers in about a second for 1,000 trials.

TRIALS_DIR = "trials"
STATES = ("done", "running", "stopped", "failed", "started", "pending")  # the order status counts them in


def checkpoints_uri(store_uri: str, attack_key: str) -> str:
    return store.join(store_uri, "checkpoints", attack_key)


def write_trial_state(sdir: str, trial_key: str, run_name: str, state: str, **fields: Any) -> None:
    """Record a trial's state (``running``, ``done``, ``stopped``, ``failed``) for ``vizsweep status``."""
    if state not in STATES:
        raise ValueError(f"unknown trial state {state!r}; valid: {', '.join(STATES)}")
    doc = {"run_name": run_name, "state": state, "updated": time.time(), **fields}
    store.write_json(store.join(sdir, TRIALS_DIR, f"{trial_key}.json"), doc)


def read_trial_states(sdir: str) -> dict[str, dict[str, Any]]:
    """trial_key -> its last recorded state (one listing of the folder, one read per file)."""
    out = {}
    for f in store.listdir(store.join(sdir, TRIALS_DIR)):
        if f.endswith(".json"):
            out[f.rsplit("/", 1)[-1][: -len(".json")]] = store.read_json(f)
    return out


def trial_rows(
    sdir: str, store_uri: str, plans: list[dict[str, Any]], sweep_status: dict[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(run name, state) per planned trial, in plan order. A trial with no state file is, in a sweep
    whose status.json says ``done`` (one run before trials recorded states), ``done`` or ``stopped``;
    else ``started`` when it has checkpoints (killed before it recorded anything), else ``pending``."""
    states = read_trial_states(sdir)
    sweep_status = sweep_status or {}
    stopped = set(sweep_status.get("stopped") or ())
    rows = []
    for p in plans:
        rec = states.get(p["trial_key"])
        if rec is not None:
            state = rec["state"]
        elif sweep_status.get("state") == "done":
            state = "stopped" if p["run_name"] in stopped else "done"
        elif store.exists(checkpoints_uri(store_uri, p["attack_key"])):
            state = "started"
        else:
            state = "pending"
        rows.append((p["run_name"], state))
    return rows


# --------------------------------------------------------------------------- stop requests
# ``vizsweep stop`` writes ``{sweep}/stop.json``; the driver's Tune stopper polls it, ends the
# experiment (trials keep their last checkpoint), marks the sweep ``stopped`` and acknowledges the
# request in the same file. The next launch or resume of the sweep removes it.

STOP_FILE = "stop.json"


def stop_uri(sdir: str) -> str:
    return store.join(sdir, STOP_FILE)


def request_stop(sdir: str) -> None:
    store.write_json(stop_uri(sdir), {"requested": time.time()})


def stop_requested(sdir: str) -> bool:
    """A stop was asked for and the driver has not acknowledged it yet."""
    uri = stop_uri(sdir)
    return store.exists(uri) and "acknowledged" not in store.read_json(uri)


def acknowledge_stop(sdir: str) -> None:
    uri = stop_uri(sdir)
    old = store.read_json(uri) if store.exists(uri) else {}
    store.write_json(uri, {**old, "acknowledged": time.time()})


def clear_stop(sdir: str) -> None:
    if store.exists(stop_uri(sdir)):
        store.delete(stop_uri(sdir))
