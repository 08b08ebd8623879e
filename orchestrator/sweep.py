"""Launch a sweep: the phases of ARCHITECTURE.md, in order, on Ray.

0. prepare (driver): synthetic data, pretrained bases, reference encoder;
1. variants: pruned + fine-tuned models as Ray tasks;
2. tables: initial activation tables of every variant (Ray Data);
3. attacks: trials on Ray Tune, the α controller as the trial scheduler;
then ``vizsweep report`` reads MLflow (``orchestrator.report``).

A sweep's id is its name plus the content key of its spec, so launching the same spec
again finds the same sweep; its folder ``{store}/sweeps/{id}/`` holds the spec, the plan,
Tune's experiment state, the controller's decisions and a status file. Trials whose
outputs are committed in the store are not scheduled again.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from jobs.raysetup import ensure_ray
from orchestrator.failure import mark_launch_failed
from orchestrator.mlflow_view import share_sweep_view
from orchestrator.phases.attacks import log_stored, run_trials
from orchestrator.phases.prepare import prepare
from orchestrator.phases.tables import initial_tables
from orchestrator.phases.variants import make_variants
from orchestrator.pictures import TrialPictures
from orchestrator.plan import needs_tables, plan_trials, stored_result, with_start_models
from orchestrator.progress import Bar, SweepProgress
from orchestrator.spec import default_tracking_uri
from orchestrator.status import (
    acknowledge_stop,
    clear_stop,
    read_trial_states,
    stop_requested,
    sweep_dir,
    sweep_id_for,
    write_status,
    write_trial_state,
)  # fmt: skip
from orchestrator.sweep_figure import write_sweep_figures
from orchestrator.tracking import SweepTracker
from orchestrator.trial import stop_marker
from shared import store

__all__ = ["SweepResult", "launch", "sweep_dir", "sweep_id_for", "write_status"]


@dataclass
class SweepResult:
    sweep_id: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: int
    trained: int  # trials that ran on Tune in this call
    reused: int  # trials whose outputs were already in the store
    failed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    seconds: float = 0.0


BAR_UNITS = (("data", "img"), ("variants", "variant"), ("ranking", "step"))  # driver stage -> bar unit


def launch(spec: Any, *, quiet: bool = False, max_concurrent: int | None = None) -> SweepResult:
    """Run (or finish) the sweep ``spec``; returns when every trial has ended.

    Any exception marks the sweep ``failed`` with its reason (status.json, MLflow runs FAILED),
    then propagates; ``vizsweep resume`` starts again from what is done.
    """
    try:
        return _launch(spec, quiet=quiet, max_concurrent=max_concurrent)
    except BaseException as e:
        sid = sweep_id_for(spec)
        mark_launch_failed(sweep_dir(spec.store, sid), sid, e)
        raise


def _launch(spec: Any, *, quiet: bool = False, max_concurrent: int | None = None) -> SweepResult:
    t0 = time.time()
    sid = sweep_id_for(spec)
    sdir = sweep_dir(spec.store, sid)
    store.write_json(store.join(sdir, "spec.json"), spec.to_dict())
    clear_stop(sdir)  # a stop asked of an earlier run of this sweep is done with
    write_status(sdir, sweep_id=sid, name=spec.name, state="preparing", driver_pid=os.getpid(), started=t0,
                 reason=None)  # fmt: skip
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    bars: list[Bar] = []

    def bar(name: str) -> Bar | None:
        """One bar per driver stage; the previous stage's bar is finished first (no nesting)."""
        if quiet:
            return None
        for b in bars:
            b.close()
        unit = next((u for key, u in BAR_UNITS if key in name), "epoch")
        b = Bar(name, unit=unit)
        bars.append(b)
        return b

    say(f"sweep {sid}: preparing (data, base models, embedder)")
    prep = make_variants(spec, prepare(spec, bar), bar)
    for b in bars:
        b.close()
    plans = plan_trials(spec, prep)
    store.write_json(store.join(sdir, "plan.json"), [p.to_dict() for p in plans])
    tracking_uri = spec.tracking_uri or default_tracking_uri(spec.store)
    tracker = SweepTracker(tracking_uri, spec.name)
    parent = tracker.parent(sid, params=spec.to_dict(), tags={"vizsweep.store": store.normalize(spec.store)})
    experiment_id = tracker.experiment_id
    write_status(sdir, state="tables", trials=len(plans), tracking_uri=tracking_uri,
                 experiment_id=experiment_id, parent_run_id=parent)  # fmt: skip

    ensure_ray(spec.ray_address)
    if needs_tables(spec):
        say(f"sweep {sid}: initial activation tables ({len(prep.variants)} variant(s))")
        initial_tables(spec, prep, None if quiet else Bar("tables"))

    done = {p.trial_key for p in plans if stored_result(p, spec.store) is not None}
    stopped_before = [p.run_name for p in plans if store.exists(stop_marker(spec.store, p.attack_key))]
    todo = [p for p in plans if p.trial_key not in done and p.run_name not in stopped_before]
    _record_states(sdir, plans, done, stopped_before)
    logged = log_stored(plans, done, spec, tracking_uri, experiment_id, parent, sid)
    say(f"sweep {sid}: {len(plans)} trials, {len(done)} already in the store"
        f"{f' ({logged} logged to MLflow now)' if logged else ''}, {len(todo)} to run")  # fmt: skip
    failed: list[str] = []
    stopped: list[str] = list(stopped_before)
    pictures = TrialPictures(spec.store, store.current_s3())
    if todo and not stop_requested(sdir):
        write_status(sdir, state="attacks")
        progress = SweepProgress(len(plans), len(done), sdir, quiet=quiet)
        first, later = [p for p in todo if not p.after], [p for p in todo if p.after]
        held = _hold_actors(sid, sdir, tracking_uri) if first and later else None  # the same for both rounds
        with progress, pictures:  # each trial's pictures start as it ends (orchestrator.pictures)
            if first:
                failed, stopped_now = run_trials(
                    spec, sid, first, tracking_uri, experiment_id, parent, max_concurrent
                )
                stopped += stopped_now
            if later and not stop_requested(sdir):  # trials on the models the first round trained
                ready, blocked = with_start_models(later, plans, spec.store)
                failed += blocked
                if ready:
                    failed_now, stopped_now = run_trials(spec, sid, ready, tracking_uri, experiment_id, parent,
                                                         max_concurrent, name="attacks-on-models")  # fmt: skip
                    failed += failed_now
                    stopped += stopped_now
        del held
    drawn = pictures.finish(plans, tracking_uri, sid, say)
    if drawn:
        say(f"sweep {sid}: before/after pictures of {drawn} trial(s) logged")
    state = "failed" if failed else "done"
    for path in _figures(spec.store, sid, tracking_uri):
        say(f"figure: {path}")
    reason = f"{len(failed)} trial(s) failed: {', '.join(failed)}" if failed else None
    if stop_requested(sdir):  # `vizsweep stop`: unfinished trials keep their checkpoints
        state, reason = "stopped", f"stopped by `vizsweep stop`; continue with: vizsweep resume {sid}"
        acknowledge_stop(sdir)
    share_sweep_view(tracking_uri, experiment_id, sid)  # the runs table MLflow's UI opens on
    tracker.finish_parent(sid, {"failed": "FAILED", "stopped": "KILLED"}.get(state, "FINISHED"))
    write_status(sdir, state=state, failed=failed, stopped=stopped, finished=time.time(), reason=reason)
    return SweepResult(sid, tracking_uri, experiment_id, parent, len(plans), len(todo), len(done),
                       failed, stopped, time.time() - t0)  # fmt: skip


def _hold_actors(sid: str, sdir: str, tracking_uri: str) -> tuple[Any, Any]:
    """Handles on the sweep's α board and run log: an actor lives while a handle does, and each round
    of trials (``run_trials``) drops its own when it returns; held here, the next round finds them
    alive (a round that asked while the last handle was going would get an actor on its way out)."""
    from orchestrator.alpha_scheduler import get_or_create_board
    from orchestrator.run_log import start_run_log

    return get_or_create_board(sid, store.join(sdir, "alpha")), start_run_log(sid, tracking_uri)


def _figures(store_uri: str, sid: str, tracking_uri: str) -> list[str]:
    """The sweep-level figures (orchestrator.sweep_figure); a figure that fails to draw is reported, and
    the sweep's trials and status stay as they are (the figures are a view of results already logged)."""
    try:
        return write_sweep_figures(store_uri, sid, tracking_uri)
    except Exception as e:  # a drawing error must not fail a finished sweep
        print(f"sweep {sid}: the sweep figures could not be drawn ({type(e).__name__}: {e})", file=sys.stderr)
        return []


def _record_states(sdir: str, plans: list, done: set[str], stopped: list[str]) -> None:
    """Trial states for ``vizsweep status`` of the trials already settled in the store (written once)."""
    known = read_trial_states(sdir)
    for p in plans:
        state = "done" if p.trial_key in done else "stopped" if p.run_name in stopped else None
        if state and known.get(p.trial_key, {}).get("state") != state:
            write_trial_state(sdir, p.trial_key, p.run_name, state)
