"""Launch, resume and inspect sweeps: the phases of ARCHITECTURE.md on Ray.

1. driver stages: synthetic data, pretrained bases, reference encoder (``plan.prepare``);
2. initial activation tables of every variant (Ray Data);
3. attack trials on Ray Tune, the α controller as the trial scheduler;
4. the report (``orchestrator.report``).

A sweep's id is its name plus the content key of its spec, so launching the same
spec again finds the same sweep; its folder ``{store}/sweeps/{id}/`` holds the
spec, the plan, Tune's experiment state, the controller's decisions and a status
file. Trials whose outputs are committed in the store are not scheduled again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plan import TrialPlan, plan_trials, prepare, stored_result
from shared import store

TUNE_DIR = "tune"


def sweep_id_for(spec: Any) -> str:
    return f"{spec.name}-{store.content_key(spec.to_dict())[:8]}"


def sweep_dir(store_uri: str, sweep_id: str) -> str:
    return store.join(store_uri, "sweeps", sweep_id)


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


def write_status(sdir: str, **fields: Any) -> None:
    uri = store.join(sdir, "status.json")
    old = store.read_json(uri) if store.exists(uri) else {}
    store.write_json(uri, {**old, **fields, "updated": time.time()})


def launch(spec: Any, *, quiet: bool = False, max_concurrent: int | None = None) -> SweepResult:
    """Run (or finish) the sweep ``spec``; returns when every trial has ended."""
    from jobs.raysetup import ensure_ray
    from orchestrator.progress import Bar, SweepProgress
    from orchestrator.spec import default_tracking_uri
    from orchestrator.tracking import SweepTracker

    t0 = time.time()
    sid = sweep_id_for(spec)
    sdir = sweep_dir(spec.store, sid)
    store.write_json(store.join(sdir, "spec.json"), spec.to_dict())
    write_status(sdir, sweep_id=sid, name=spec.name, state="preparing", driver_pid=os.getpid(), started=t0)
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

    say(f"sweep {sid}: preparing (data, base models, reference encoder)")
    prep = prepare(spec, bar)
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
    say(f"sweep {sid}: initial activation tables ({len(prep.variants)} variant(s), Ray Data)")
    initial_tables(spec, prep, None if quiet else Bar("tables"))

    from orchestrator.trial import stop_marker

    done = {p.trial_key for p in plans if stored_result(p, spec.store) is not None}
    stopped_before = [p.run_name for p in plans if store.exists(stop_marker(spec.store, p.attack_key))]
    todo = [p for p in plans if p.trial_key not in done and p.run_name not in stopped_before]
    logged = _log_stored(plans, done, spec, tracking_uri, experiment_id, parent, sid)
    say(f"sweep {sid}: {len(plans)} trials, {len(done)} already in the store"
        f"{f' ({logged} logged to MLflow now)' if logged else ''}, {len(todo)} to run")  # fmt: skip
    failed: list[str] = []
    stopped: list[str] = list(stopped_before)
    if todo:
        write_status(sdir, state="attacks")
        progress = SweepProgress(len(plans), len(done), sdir, quiet=quiet)
        failed, stopped_now = run_trials(
            spec, sid, todo, tracking_uri, experiment_id, parent, progress, max_concurrent
        )
        stopped += stopped_now
        progress.close()
    state = "failed" if failed else "done"
    tracker.finish_parent(sid, "FAILED" if failed else "FINISHED")
    write_status(sdir, state=state, failed=failed, stopped=stopped, finished=time.time())
    return SweepResult(sid, tracking_uri, experiment_id, parent, len(plans), len(todo), len(done),
                       failed, stopped, time.time() - t0)  # fmt: skip


def initial_tables(spec: Any, prep, progress=None) -> None:
    """θ0's tables on the train split (top-k sets, D_attack) and the val split (D_τ), per variant."""
    from shared.progress import no_progress

    for v in dict.fromkeys(prep.variants):
        initial_tables_for(spec, prep.dataset, v, tuple(spec.layers), progress or no_progress)
    if progress is not None:
        progress.close()


def initial_tables_for(spec: Any, dataset: str, v, layers: tuple[str, ...], progress=None) -> None:
    from jobs.activations import ActivationsSpec, run_activations
    from shared.progress import no_progress

    for split in dict.fromkeys((spec.dataset.train_split, spec.dataset.val_split)):
        a = ActivationsSpec(dataset=dataset, split=split, model=v.model, weights=v.weights,
                            variant_key=v.key, layers=layers)  # fmt: skip
        run_activations(a, spec.store, progress=progress or no_progress)


def _log_stored(plans, done, spec, tracking_uri, experiment_id, parent, sid) -> int:
    """Trials finished in the store but without a finished MLflow run (e.g. a new tracking URI)."""
    from jobs.attack import model_dir
    from orchestrator.tracking import TrialRun, find_child_runs
    from orchestrator.trial import final_metrics, log_outputs

    finished = {
        r.data.tags.get("vizsweep.trial_key")
        for r in find_child_runs(tracking_uri, sid)
        if r.info.status == "FINISHED"
    }
    n = 0
    for p in plans:
        if p.trial_key not in done or p.trial_key in finished:
            continue
        res = stored_result(p, spec.store)
        run = TrialRun.open(tracking_uri, experiment_id, parent, p.trial_key, p.run_name, p.params,
                            {"vizsweep.sweep_id": sid, "vizsweep.attack_key": p.attack_key})  # fmt: skip
        am = res["attack"]
        for h in am.get("history", []):
            run.log_step({k: float(h[k]) for k in ("attack_loss", "maintain_loss", "alpha", "acc_drop", "epoch")
                          if k in h} | {"eval_acc": float(h["acc"])}, int(h["step"]))  # fmt: skip
        log_outputs(run, p, store.join(model_dir(spec.store, p.attack_key), "model.pt"), res["metrics"])
        run.log_final(final_metrics(p, am.get("history", []), res["metrics"], "train"))
        run.set_tags({"vizsweep.status": "done"})
        run.finish("FINISHED")
        n += 1
    return n


def run_trials(spec, sid, todo: list[TrialPlan], tracking_uri, experiment_id, parent, progress,
               max_concurrent: int | None) -> tuple[list[str], list[str]]:  # fmt: skip
    """Phase 3 on Ray Tune; returns the run names of failed and of controller-stopped trials."""
    import ray
    from ray import tune

    from orchestrator.alpha_scheduler import AlphaScheduler, get_or_create_board
    from orchestrator.trial import TrialContext, attack_trial

    sdir = sweep_dir(spec.store, sid)
    board = get_or_create_board(sid, store.join(sdir, "alpha"))
    ray.get(board.history.remote("warm-up"))  # the board is up before the first trial asks it
    ctx = TrialContext(
        sid, store.normalize(spec.store), tracking_uri, experiment_id, parent, store.current_s3()
    )
    gpu_per = gpus_per_trial(spec)
    cpu_per = float(spec.resources.cpus_per_trial)
    trainable = tune.with_resources(
        tune.with_parameters(attack_trial, ctx=ctx), {"cpu": cpu_per, "gpu": gpu_per}
    )
    fs, path = store.resolve(store.join(sdir, TUNE_DIR))
    run_config = tune.RunConfig(
        name="attacks", storage_path=path, storage_filesystem=fs, verbose=0,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[progress.tune_callback()], log_to_file=True,
    )  # fmt: skip
    exp = os.path.join(path, "attacks")
    if tune.Tuner.can_restore(exp, storage_filesystem=fs):
        # the same spec ran before and stopped (crash, SIGKILL): Tune's own restore; finished trials stay
        tuner = tune.Tuner.restore(exp, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)  # fmt: skip
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"plan": tune.grid_search([p.to_dict() for p in todo])},
            tune_config=tune.TuneConfig(
                scheduler=AlphaScheduler(sid), max_concurrent_trials=max_concurrent or concurrency(cpu_per, gpu_per),
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name, reuse_actors=True,
            ),
            run_config=run_config,
        )  # fmt: skip
    grid = tuner.fit()
    failed, stopped = [], []
    for r in grid:
        name = r.config["plan"]["run_name"] if r.config else "?"
        if r.error is not None:
            failed.append(name)
        elif (r.metrics or {}).get("stopped_budget"):
            stopped.append(name)
    return failed, stopped


def _trial_name(trial) -> str:
    return f"{trial.config['plan']['run_name']}-{trial.trial_id}"


def gpus_per_trial(spec: Any) -> float:
    """GPUs of one trial (or pruning task): ``auto`` is 1 when the cluster has GPUs, else 0."""
    import ray

    res = spec.resources
    if res.gpus_per_trial != "auto":
        return float(res.gpus_per_trial)
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def concurrency(cpu_per: float, gpu_per: float) -> int:
    """Trials at once: one per GPU; on CPUs leave one core per node for the Ray Data tasks of the trials."""
    import ray

    if gpu_per > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpu_per))
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [int(max(0.0, n["Resources"].get("CPU", 0) - 1) // max(cpu_per, 1e-9)) for n in nodes]
    return max(1, sum(per_node))
