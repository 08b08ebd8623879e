"""The trials' MLflow runs, logged by one actor per sweep on the driver's node.

A trial's process never imports MLflow: opening a sqlite tracking store costs a fresh process
about 2 s (its SQLAlchemy models and Alembic), and ``import mlflow`` 1 s more, paid by the first
trial of every worker. The actor pays them once per sweep, while Tune starts. It is also the
only writer of a sqlite store, which lives on the driver's node: a trial on another node could
not reach that file.

:class:`RemoteRun` is what a trial holds: :class:`orchestrator.tracking.TrialRun`'s methods,
each one call to the actor. Files go over as bytes (``log_bytes``), since the actor may run on
another node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray

from orchestrator.alpha_scheduler import BOARD_NAMESPACE

if TYPE_CHECKING:
    from orchestrator.tracking import TrialRun


def run_log_name(sweep_id: str) -> str:
    return f"run-log-{sweep_id}"


@ray.remote(num_cpus=0, max_restarts=-1)
class RunLog:
    """Every MLflow call of a sweep's trials. Calls run one at a time (one sqlite writer); runs are
    known by id, and found again after a restart of the actor."""

    def __init__(self, tracking_uri: str) -> None:
        from orchestrator.tracking import client

        self.uri = tracking_uri
        client(tracking_uri)  # the store's import and schema check, before the first trial asks
        self.runs: dict[str, TrialRun] = {}

    def _run(self, run_id: str) -> TrialRun:
        from orchestrator.tracking import TrialRun, client

        if run_id not in self.runs:
            c = client(self.uri)
            self.runs[run_id] = TrialRun(c, c.get_run(run_id))
        return self.runs[run_id]

    def finished(self, experiment_id: str, parent_run_id: str, trial_key: str) -> bool:
        from orchestrator.tracking import TrialRun

        return TrialRun.finished(self.uri, experiment_id, parent_run_id, trial_key)

    def fail(self, experiment_id: str, parent_run_id: str, trial_key: str, reason: str) -> None:
        from orchestrator.tracking import TrialRun

        TrialRun.fail(self.uri, experiment_id, parent_run_id, trial_key, reason)

    def open(self, experiment_id: str, parent_run_id: str, trial_key: str, run_name: str,
             params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:  # fmt: skip
        from orchestrator.tracking import TrialRun

        run = TrialRun.open(self.uri, experiment_id, parent_run_id, trial_key, run_name, params, tags)
        self.runs[run.run_id] = run
        return run.run_id

    def log_step(self, run_id: str, metrics: Mapping[str, Any], step: int) -> bool:
        return self._run(run_id).log_step(metrics, step)

    def log_final(self, run_id: str, metrics: Mapping[str, Any]) -> None:
        self._run(run_id).log_final(metrics)

    def log_bytes(self, run_id: str, name: str, data: bytes) -> None:
        self._run(run_id).log_bytes(name, data)

    def tags(self, run_id: str) -> dict[str, str]:
        return self._run(run_id).tags()

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self._run(run_id).set_tags(tags)

    def finish(self, run_id: str, status: str) -> None:
        self._run(run_id).finish(status)
        self.runs.pop(run_id, None)


def start_run_log(sweep_id: str, tracking_uri: str) -> ray.actor.ActorHandle:
    """The sweep's run log, on the driver's node; returns at once (it starts while Tune does)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return RunLog.options(
        name=run_log_name(sweep_id), namespace=BOARD_NAMESPACE, get_if_exists=True, lifetime=None,
        scheduling_strategy=here,
    ).remote(tracking_uri)  # fmt: skip


def run_log(sweep_id: str) -> ray.actor.ActorHandle:
    """The sweep's run log, from a trial."""
    return ray.get_actor(run_log_name(sweep_id), namespace=BOARD_NAMESPACE)


class RemoteRun:
    """A trial's MLflow run through the sweep's :class:`RunLog` (the methods of ``TrialRun``)."""

    def __init__(self, log: ray.actor.ActorHandle, run_id: str) -> None:
        self.log = log
        self.run_id = run_id
        self.pending: list[ray.ObjectRef] = []  # step logs sent without waiting (see log_step)

    @classmethod
    def open(cls, log: ray.actor.ActorHandle, experiment_id: str, parent_run_id: str, trial_key: str,
             run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> RemoteRun:  # fmt: skip
        run_id = ray.get(
            log.open.remote(experiment_id, parent_run_id, trial_key, run_name, dict(params), dict(tags))
        )
        return cls(log, run_id)

    def log_step(self, metrics: Mapping[str, Any], step: int) -> None:
        """Sent without waiting: the trial trains on while the actor writes. The actor runs one
        caller's calls in the order they were sent, so the steps land in order and before any later
        call; a failed one is raised by the next call that waits (:meth:`flush` at the latest)."""
        self.pending.append(self.log.log_step.remote(self.run_id, dict(metrics), step))

    def flush(self) -> None:
        """Wait for the step logs sent so far (and raise the first that failed)."""
        pending, self.pending = self.pending, []
        ray.get(pending)

    def _call(self, ref: ray.ObjectRef) -> Any:
        self.flush()
        return ray.get(ref)

    def log_final(self, metrics: Mapping[str, Any]) -> None:
        self._call(self.log.log_final.remote(self.run_id, dict(metrics)))

    def log_bytes(self, name: str, data: bytes) -> None:
        self._call(self.log.log_bytes.remote(self.run_id, name, data))

    def tags(self) -> dict[str, str]:
        return self._call(self.log.tags.remote(self.run_id))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._call(self.log.set_tags.remote(self.run_id, dict(tags)))

    def finish(self, status: str = "FINISHED") -> None:
        self._call(self.log.finish.remote(self.run_id, status))
