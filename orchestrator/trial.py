"""The Tune trainable: one trial of any family (its runner trains and measures; MLflow records).

The trial keeps its own checkpoints in the store, under the attack's content key
(``{store}/checkpoints/{attack_key}``), so a retry on another node, or a trial
restarted by ``vizsweep resume``, continues from its last evaluation interval
whoever restarts it; Tune's own checkpoint copy would write the same 100s of MB
twice. The MLflow run is found again by the trial key and skips steps it has
already logged; it is written by the sweep's :mod:`orchestrator.run_log` actor, so that a
trial's process never imports MLflow. The α comes from the :mod:`orchestrator.alpha_scheduler`.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from jobs.attack_state import ResumeError, find_checkpoint
from jobs.runners import TrialOutcome, runner_for
from orchestrator.alpha_scheduler import BOARD_NAMESPACE, board_name
from orchestrator.failure import is_deterministic, reason_of
from orchestrator.plan import TrialPlan
from orchestrator.run_log import RemoteRun, run_log
from orchestrator.status import checkpoints_uri, stop_requested, sweep_dir, write_trial_state
from shared import store, timing

if TYPE_CHECKING:
    from orchestrator.tracking import TrialRun

    RunLike = TrialRun | RemoteRun  # the driver logs stored outcomes itself (phases.attacks)

# Trials this worker process has started: Tune reuses its trial actors, and the first trial of a
# process carries the process's first uses (torch._dynamo's import by torch.optim: docs/costs.md).
_STARTED_HERE = itertools.count(1)
TAG_WORKER_TRIAL = "vizsweep.worker_trial"  # 1 = the first trial of its worker process

STEP_METRICS = ("attack_loss", "maintain_loss", "alpha", "acc_drop", "epoch")
DECISION_TIMEOUT_S = 600.0


class BudgetStop(Exception):
    """The controller stopped the trial: α at its floor and the accuracy drop still over the limit."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares; handed over with ``tune.with_parameters`` so that
    nothing here (S3 credentials included) is written into Tune's config files."""

    sweep_id: str
    store_uri: str
    experiment_id: str
    parent_run_id: str
    s3: Any = None
    primary_split: str = "train"


def stop_marker(store_uri: str, attack_key: str) -> str:
    """Written when the α controller stopped the attack (its accuracy budget cannot be held)."""
    return store.join(checkpoints_uri(store_uri, attack_key), "_STOPPED.json")


def attack_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Tune function trainable; ``config["plan"]`` is a :class:`TrialPlan` as a dict.

    Its wall time, from here, is split into parts (shared.timing) that the run logs as final
    metrics: the jobs' train / eval / tables / metrics / save, this trial's MLflow ``log``, other.
    """
    plan = config["plan"]
    sdir = sweep_dir(ctx.store_uri, ctx.sweep_id)
    store.configure(ctx.s3)
    write_trial_state(sdir, plan["trial_key"], plan["run_name"], "running")
    try:
        with timing.active(timing.PartTimer()):
            state = _attack_trial(config, ctx)
    except BaseException as e:  # an error, or Tune ending the trial; either way resumable
        stopping = stop_requested(sdir)  # `vizsweep stop`: not a failure
        if stopping or not is_deterministic(e):  # a lost worker, the network: Tune retries it
            state = "started" if stopping else "failed"
            write_trial_state(sdir, plan["trial_key"], plan["run_name"], state, error=type(e).__name__)
            raise
        # bad config or data: a retry would fail the same way, so the trial fails once, with one line
        reason = reason_of(e)
        write_trial_state(sdir, plan["trial_key"], plan["run_name"], "failed", error=reason)
        ray.get(
            run_log(ctx.sweep_id).fail.remote(ctx.experiment_id, ctx.parent_run_id, plan["trial_key"], reason)
        )
        tune.report({"phase": "failed", "failed_trial": 1, "error": f"{plan['run_name']}: {reason}"})
        return
    write_trial_state(sdir, plan["trial_key"], plan["run_name"], state)


def _attack_trial(config: dict[str, Any], ctx: TrialContext) -> str:
    """Runs the trial; returns its state for ``vizsweep status`` (``done`` or ``stopped``)."""
    plan = TrialPlan.from_dict(config["plan"])
    job = plan.trial_job()
    runs = run_log(ctx.sweep_id)
    with timing.part("log"):  # the first trials may wait here for the run log to start
        finished = ray.get(runs.finished.remote(ctx.experiment_id, ctx.parent_run_id, plan.trial_key))
    if finished and (outcome := runner_for(job.attack).stored(job, ctx.store_uri)) is not None:
        # ended (committed and logged) before its driver died, before Tune recorded it: not run again
        tune.report({**outcome.final, "phase": "done", "done_trial": 1})
        return "done"
    ckdir = checkpoints_uri(ctx.store_uri, plan.attack_key)
    board = ray.get_actor(board_name(ctx.sweep_id), namespace=BOARD_NAMESPACE)
    resume = _existing(ckdir)
    with timing.part("log"):
        run = RemoteRun.open(
            runs, ctx.experiment_id, ctx.parent_run_id, plan.trial_key, plan.run_name, plan.params,
            plan.run_tags(ctx.sweep_id),
        )  # fmt: skip
        _mark_attempt(run, resume)

    stash: dict[int, dict[str, float]] = {}

    def report(m: dict[str, Any]) -> None:
        step = int(m["step"])
        values = {**{k: float(m[k]) for k in STEP_METRICS if k in m}, "eval_acc": float(m["acc"])}
        with timing.part("log"):
            if plan.alpha_controlled:
                stash[step] = values  # logged with the controller's decision, in one MLflow call
            else:
                run.log_step(values, step)
            tune.report(
                {**{k: v for k, v in m.items() if isinstance(v, int | float) and not isinstance(v, bool)},
                 "phase": "attack", "alpha_controlled": plan.alpha_controlled}
            )  # fmt: skip

    replay = [resume is not None]  # only the first question after a restart may need a replay

    def alpha_source(step: int, m: dict[str, Any]) -> float:
        if replay[0]:
            replay[0] = False
            if ray.get(board.get.remote(plan.trial_key, step, 0.0)) is None:
                report(m)  # restarted before the controller answered: show it that result again
        t = time.perf_counter()
        d = ray.get(board.get.remote(plan.trial_key, step, DECISION_TIMEOUT_S))
        waited = time.perf_counter() - t  # the cost of one α change, as the trial sees it
        if d is None:
            raise TimeoutError(
                f"no α decision for step {step} of trial {plan.run_name} in {DECISION_TIMEOUT_S} s"
            )
        with timing.part("log"):
            run.log_step({**stash.pop(step, {}), "alpha_next": d["alpha"], "alpha_stop": float(d["stop"]),
                          "alpha_wait_s": waited}, step)  # fmt: skip
        if d["stop"]:
            raise BudgetStop(
                f"α at its floor ({d['previous']:.2g}) and the accuracy drop {d['drop_pp']:.2f} pp still over "
                f"the limit"
            )
        return float(d["alpha"])

    try:
        outcome = runner_for(job.attack).run(
            job, ctx.store_uri, report=report, checkpoint_dir=ckdir, resume_from=resume,
            alpha_source=alpha_source if plan.alpha_controlled else None,
        )  # fmt: skip
    except BudgetStop as e:
        # Recorded in the store too: a relaunch or resume must not train this trial again.
        store.write_json(stop_marker(ctx.store_uri, plan.attack_key), {"reason": str(e), "time": time.time()})
        run.set_tags({"vizsweep.status": "stopped: accuracy budget", "vizsweep.stop_reason": str(e)})
        run.finish("KILLED")
        tune.report({"phase": "stopped", "stopped_budget": 1})
        return "stopped"
    if outcome is None:
        raise RuntimeError(f"trial {plan.run_name} ended without a result (its job stopped early)")
    costs = finish_run(run, plan, outcome, ray.get(board.history.remote(plan.trial_key)))
    tune.report({**outcome.final, **costs, "phase": "done", "done_trial": 1})
    return "done"


def finish_run(
    run: RunLike, plan: TrialPlan, outcome: TrialOutcome, decisions: list | None = None
) -> dict[str, float]:
    """Artifacts, final metrics and the status tag of a finished trial's run, then FINISHED.

    The final metrics carry the trial's cost parts (``*_s``): the active timer's, taken after the
    artifacts are logged, or the outcome's own; none for an outcome read from the store. Returns them.
    """
    with timing.part("log"):
        run.flush()  # the step logs still on their way count in the trial's cost
        log_outputs(run, plan, outcome, decisions)
    timer = timing.current()
    costs = timer.costs() if timer is not None else dict(outcome.costs)
    run.log_final({**outcome.final, **costs})
    status = "budget broken" if outcome.budget_broken else "done"
    run.set_tags({"vizsweep.status": status})
    run.finish("FINISHED")
    return costs


def _mark_attempt(run: RemoteRun, resume: str | None) -> None:
    """Where and how often the trial ran, and from which step it continued (for users and tests);
    which trial of its worker process this attempt is (the first pays the process's first uses)."""
    tags = run.tags()
    attempts = int(tags.get("vizsweep.attempts", "0")) + 1
    nodes = [n for n in tags.get("vizsweep.nodes", "").split(",") if n]
    node = ray.get_runtime_context().get_node_id()
    new = {"vizsweep.attempts": attempts, "vizsweep.node": node, "vizsweep.nodes": ",".join([*nodes, node]),
           TAG_WORKER_TRIAL: next(_STARTED_HERE)}  # fmt: skip
    if resume is not None:
        step = torch_load_step(resume)
        new["vizsweep.resumed_from_step"] = step
    run.set_tags(new)


def torch_load_step(ckdir: str) -> int:
    """The step of the newest checkpoint in ``ckdir`` (from its folder name: no need to load it)."""
    path = find_checkpoint(ckdir)
    folder = path.rsplit("/", 2)[-2]
    return int(folder.split("-")[-1])


def _existing(ckdir: str) -> str | None:
    try:
        find_checkpoint(ckdir)
    except ResumeError:
        return None
    return ckdir


def log_outputs(run: RunLike, plan: TrialPlan, outcome: TrialOutcome, decisions: list | None = None) -> None:
    """Per-unit tables, the α decisions and a pointer to the model at the run's artifact root (the
    compare page shows only root artifacts)."""
    if decisions:
        run.log_bytes("alpha_decisions.json", json.dumps(decisions, indent=1).encode())
    for src, name in outcome.artifacts:
        run.log_bytes(name, store.read_bytes(src))
    pointer = {"model_uri": outcome.model_uri, "attack_key": plan.attack_key, "model": plan.params["model"]}
    run.log_bytes("model.json", json.dumps(pointer).encode())


def log_store_files(log_artifact: Callable[[str], None], files: list[tuple[str, str]]) -> None:
    """Each ``(store URI, name)`` in ``files`` logged as ``name`` at a run's artifact root."""
    with tempfile.TemporaryDirectory() as tmp:
        for src, name in files:
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(store.read_bytes(src))
            log_artifact(path)
