"""Phase 3: the attack trials on Ray Tune, the α controller as the trial scheduler.

Trials whose outputs are committed in the store are not scheduled again; those without a
finished MLflow run (e.g. a new tracking URI) are logged from the store instead.
"""

from __future__ import annotations

import os
from typing import Any

from orchestrator.plan import TrialPlan, stored_result
from orchestrator.resources import concurrency, gpus_per_trial
from orchestrator.status import TUNE_DIR, sweep_dir
from orchestrator.tracking import TrialRun, find_child_runs
from orchestrator.trial import finish_run
from shared import store


def log_stored(plans: list[TrialPlan], done: set[str], spec: Any, tracking_uri: str, experiment_id: str,
               parent: str, sid: str) -> int:  # fmt: skip
    """Trials finished in the store but without a finished MLflow run: logged now from the store."""
    finished = {
        r.data.tags.get("vizsweep.trial_key")
        for r in find_child_runs(tracking_uri, sid)
        if r.info.status == "FINISHED"
    }
    n = 0
    for p in plans:
        if p.trial_key not in done or p.trial_key in finished:
            continue
        outcome = stored_result(p, spec.store)
        run = TrialRun.open(
            tracking_uri, experiment_id, parent, p.trial_key, p.run_name, p.params, p.run_tags(sid)
        )
        for h in outcome.history:
            keys = ("attack_loss", "maintain_loss", "alpha", "acc_drop", "epoch")
            run.log_step(
                {k: float(h[k]) for k in keys if k in h} | {"eval_acc": float(h["acc"])}, int(h["step"])
            )
        finish_run(run, p, outcome)
        n += 1
    return n


def run_trials(spec, sid, todo: list[TrialPlan], tracking_uri, experiment_id, parent,
               max_concurrent: int | None, name: str = "attacks") -> tuple[list[str], list[str]]:  # fmt: skip
    """The trials on Ray Tune; returns the run names of failed and of controller-stopped trials.

    Tune's trial events reach whoever listens (``tune_callbacks.LISTENERS``: the live progress, the
    trials' pictures).

    ``name``: Tune's experiment (a round of trials that start from other trials' models has its own,
    so a restore after a crash resumes the round that was running)."""
    import ray
    from ray import tune

    from orchestrator.alpha_scheduler import AlphaScheduler, get_or_create_board
    from orchestrator.run_log import start_run_log
    from orchestrator.trial import TrialContext, attack_trial
    from orchestrator.tune_callbacks import StopRequest, TrialEvents, quiet_trial_errors

    quiet_trial_errors()
    sdir = sweep_dir(spec.store, sid)
    board = get_or_create_board(sid, store.join(sdir, "alpha"))
    run_log = start_run_log(sid, tracking_uri)  # starts while Tune does; the first trial waits for it
    ray.get(board.history.remote("warm-up"))  # the board is up before the first trial asks it
    ctx = TrialContext(sid, store.normalize(spec.store), experiment_id, parent, store.current_s3())
    gpu_per = gpus_per_trial(spec)
    cpu_per = float(spec.resources.cpus_per_trial)
    trainable = tune.with_resources(
        tune.with_parameters(attack_trial, ctx=ctx), {"cpu": cpu_per, "gpu": gpu_per}
    )
    fs, path = store.resolve(store.join(sdir, TUNE_DIR))
    run_config = tune.RunConfig(
        name=name, storage_path=path, storage_filesystem=fs, verbose=0,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[TrialEvents()], log_to_file=True, stop=StopRequest(sdir),
    )  # fmt: skip
    exp = os.path.join(path, name)
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
    del run_log  # held through the round: an actor lives while a handle on it does
    failed, stopped = [], []
    for r in grid:
        name = r.config["plan"]["run_name"] if r.config else "?"
        if r.error is not None or (r.metrics or {}).get("failed_trial"):
            failed.append(name)
        elif (r.metrics or {}).get("stopped_budget"):
            stopped.append(name)
    # Ended (finished or stopped by `vizsweep stop`): the next launch or resume plans afresh from the
    # store, each unfinished trial from its own checkpoint. Tune's restore is for a driver that died:
    # Tune records trials it stopped, and trials that failed on their input, as ended, and would not
    # run them again.
    store.delete(store.join(sdir, TUNE_DIR))
    return failed, stopped


def _trial_name(trial) -> str:
    return f"{trial.config['plan']['run_name']}-{trial.trial_id}"
