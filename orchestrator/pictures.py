"""The pictures of finished trials: drawn on a CPU after the trial has handed back its GPU, then
logged to the trial's MLflow run.

A runner leaves its CPU-only pictures to this step (``Runner.pictures``; the finetuning family's
before/after top-k pictures, ~1 s each as PNG and as PDF, 2-5 s of a demo trial). A trial's GPU
is the scarce resource, so the trial ends once its numbers are committed and logged. Each
finished trial's pictures are started as a Ray task when Tune reports the trial done; the launch
waits for them at its end and logs them. A run is tagged ``vizsweep.pictures`` once they are
logged, so a launch that ended before logging them (a killed driver) logs them next time, and the
drawing itself is done once per metrics key (jobs.before_after.draw_committed).
"""

from __future__ import annotations

import time
from typing import Any

import ray

from jobs.runners import TrialJob, runner_for
from orchestrator import tune_callbacks
from orchestrator.plan import TrialPlan
from orchestrator.tracking import client, find_child_runs
from orchestrator.trial import log_store_files
from shared import store

TAG = "vizsweep.pictures"  # "logged" once the trial's pictures are at its run's artifact root


@ray.remote(num_cpus=1)
def _draw(job: dict[str, Any], store_uri: str, s3: Any) -> tuple[list[tuple[str, str]], float]:
    """The trial's pictures, and the seconds they took (the run's ``pictures_s``: not part of its wall time)."""
    t = time.perf_counter()
    store.configure(s3)
    trial = TrialJob.from_dict(job)
    return runner_for(trial.attack).pictures(trial, store_uri), time.perf_counter() - t


class TrialPictures:
    """The picture tasks of one launch: started as trials finish, logged by :meth:`finish`.

    While it is active (a ``with`` block), it listens to Tune's trial events
    (``tune_callbacks.TrialEvents``) and starts the task of each trial that reports ``done_trial``."""

    def __init__(self, store_uri: str, s3: Any = None) -> None:
        self.store_uri, self.s3 = store_uri, s3
        self.tasks: dict[str, Any] = {}  # trial key -> its task (none for a family that draws nothing after)

    def __enter__(self) -> TrialPictures:
        tune_callbacks.LISTENERS.append(self._event)
        return self

    def __exit__(self, *exc: object) -> None:
        tune_callbacks.LISTENERS.remove(self._event)

    def _event(self, kind: str, trial_id: str, result: dict | None, config: dict) -> None:
        if kind == "result" and result and result.get("done_trial"):
            self.start(TrialPlan.from_dict(config["plan"]))

    def start(self, plan: TrialPlan) -> None:
        if plan.trial_key not in self.tasks and runner_for(plan.job["attack"]).draws_after:
            self.tasks[plan.trial_key] = _draw.remote(plan.job, self.store_uri, self.s3)

    def finish(self, plans: list[TrialPlan], tracking_uri: str, sweep_id: str, say=print) -> int:
        """Draw (where not yet drawn) and log the pictures of every finished trial run of ``plans``
        that lacks them; returns how many runs got pictures. A failure is reported and left for the next
        launch: the trial's numbers are logged already."""
        runs = {
            r.data.tags.get("vizsweep.trial_key"): r
            for r in find_child_runs(tracking_uri, sweep_id, "FINISHED")
        }
        todo = [p for p in plans if p.trial_key in runs and runs[p.trial_key].data.tags.get(TAG) != "logged"]
        for p in todo:
            self.start(p)
        c, n = client(tracking_uri), 0
        for p in todo:
            run_id = runs[p.trial_key].info.run_id
            if p.trial_key in self.tasks:
                try:
                    pictures, seconds = ray.get(self.tasks[p.trial_key])
                except Exception as e:  # one trial's pictures must not end the launch
                    say(
                        f"pictures of {p.run_name} failed ({type(e).__name__}: {e}); the next launch draws them"
                    )
                    continue
                log_store_files(lambda path, r=run_id: c.log_artifact(r, path), pictures)  # the artifact root
                c.log_metric(run_id, "pictures_s", round(seconds, 3))
                n += 1
            c.set_tag(run_id, TAG, "logged")
        return n
