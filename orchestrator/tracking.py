"""MLflow tracking for sweeps: one parent run per sweep, one child run per trial.

Everything goes through an explicit :class:`MlflowClient` for an explicit
tracking URI, never through MLflow's fluent API: trials run inside Ray
workers, whose working directory is the trial folder, so MLflow's implicit
defaults (``sqlite:///<cwd>/mlflow.db``, ``MLFLOW_EXPERIMENT_ID``, the active
run stack) would scatter runs over per-trial databases (NOTES.md, "MLflow").

Runs are found again by tags rather than remembered ids, so that a resumed
sweep or a retried trial continues its own run instead of adding a new one:
the parent carries ``vizsweep.sweep_id``, a child carries ``mlflow.parentRunId``
and ``vizsweep.trial_key``.

Credentials never reach MLflow: every param and tag value goes through
:func:`safe_params`, which drops secret-looking keys and strips userinfo from
URIs.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.redaction import MAX_TAG_VALUE, safe_key, safe_params, safe_tags, truncate

log = logging.getLogger(__name__)

# MLflow logs at INFO when it creates or migrates a sqlite store ("Creating initial MLflow database
# tables...", "Updating database tables"): housekeeping a user need not see on every fresh store.
# ``import mlflow`` configures only the "mlflow" logger, so a level on the child sticks; it is set
# here, before any client of this module opens a store.
QUIET_LOGGERS = ("mlflow.store.db.utils",)
for _name in QUIET_LOGGERS:
    logging.getLogger(_name).setLevel(logging.WARNING)

TAG_SWEEP = "vizsweep.sweep_id"
TAG_ROLE = "vizsweep.role"  # "sweep" on the parent, "trial" on children
TAG_TRIAL_KEY = "vizsweep.trial_key"
TAG_FINAL_METRICS = "vizsweep.final_metrics"  # comma-joined keys logged by log_final (not step metrics)
TAG_PARENT = "mlflow.parentRunId"  # what the MLflow UI nests children by
# MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces, an assistant);
# "custom_model_development" ("Machine learning" in the UI's kind picker) opens the runs table.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH; metrics allow 1000, we stay under both

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
_TERMINAL = {FINISHED, FAILED, KILLED}

# --------------------------------------------------------------------------- URIs


def compare_url(server_uri: str, experiment_id: str, run_ids: Iterable[str]) -> str:
    """The MLflow UI's run-comparison page for some runs of one experiment.

    The UI reads JSON lists from the fragment's query (NOTES.md); they are
    URL-encoded so that quotes and brackets survive every browser and shell.
    """

    def enc(items: list[str]) -> str:
        return quote(json.dumps(items, separators=(",", ":")), safe="")

    base = server_uri.rstrip("/")
    return (
        f"{base}/#/compare-runs?runs={enc([str(r) for r in run_ids])}&experiments={enc([str(experiment_id)])}"
    )


# --------------------------------------------------------------------------- clients and searches


def _ensure_sqlite_folder(tracking_uri: str) -> None:
    """sqlite will not create the database's folder; a fresh store has none yet."""
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri[len("sqlite:///") :]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


@lru_cache(maxsize=8)
def client(tracking_uri: str) -> MlflowClient:
    """One client per URI and process: a sqlite client checks the schema when it starts (slow)."""
    _ensure_sqlite_folder(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a sqlite database; a server chooses its own.

    Without this, MLflow puts a sqlite store's artifacts under ``./mlruns`` of
    whichever process creates the experiment, and Ray trials all have a
    different cwd.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = os.path.abspath(tracking_uri[len("sqlite:///") :])
    return "file://" + os.path.join(os.path.dirname(db), "mlartifacts")


def search_literal(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _search_all(c: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    """Every active run that matches, oldest first, across result pages."""
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = c.search_runs(
            experiment_ids, filter_string, max_results=1000, order_by=["attributes.start_time ASC"],
            page_token=token,
        )  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _all_experiment_ids(c: MlflowClient) -> list[str]:
    ids: list[str] = []
    token: str | None = None
    while True:
        page = c.search_experiments(max_results=1000, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def _log(c: MlflowClient, run_id: str, *, metrics=(), params=(), tags=()) -> None:
    """``log_batch`` within MLflow's per-request limits (one call for anything small)."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        c.log_batch(run_id, metrics=metrics[:1000], params=params[:BATCH], tags=tags[:BATCH])
        metrics, params, tags = metrics[1000:], params[BATCH:], tags[BATCH:]


def _missing_params(run: Run, params: Mapping[str, str]) -> list[Param]:
    """Params not yet on a run: MLflow params are write-once, a resume must not re-log a changed one."""
    have = run.data.params
    for k, v in params.items():
        if k in have and have[k] != v:
            log.warning("run %s keeps param %s=%r (new value %r ignored)", run.info.run_id, k, have[k], v)
    return [Param(k, v) for k, v in params.items() if k not in have]


def _reopen_log(c: MlflowClient, run: Run, params: Mapping[str, str], tags: Mapping[str, str]) -> None:
    """On a resume: params the first attempt did not get to, and the tags as they are now."""
    _log(
        c, run.info.run_id, params=_missing_params(run, params), tags=[RunTag(k, v) for k, v in tags.items()]
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _find_parents(c: MlflowClient, sweep_id: str, experiment_ids: list[str]) -> list[Run]:
    flt = f"tags.`{TAG_SWEEP}` = {search_literal(sweep_id)} AND tags.`{TAG_ROLE}` = 'sweep'"
    return _search_all(c, experiment_ids, flt) if experiment_ids else []


def _children(c: MlflowClient, parent: Run, extra: str = "") -> list[Run]:
    flt = f"tags.`{TAG_PARENT}` = {search_literal(parent.info.run_id)}" + (f" AND {extra}" if extra else "")
    return _search_all(c, [parent.info.experiment_id], flt)


def find_parent_run(tracking_uri: str, sweep_id: str) -> Run | None:
    """The sweep's parent run in any experiment of that store, or None (the oldest if a race made two)."""
    c = client(tracking_uri)
    parents = _find_parents(c, sweep_id, _all_experiment_ids(c))
    return parents[0] if parents else None


def find_child_runs(tracking_uri: str, sweep_id: str, status: str | None = None) -> list[Run]:
    """The trial runs of a sweep, oldest first; only those with ``status`` when given."""
    parent = find_parent_run(tracking_uri, sweep_id)
    if parent is None:
        return []
    extra = f"attributes.status = {search_literal(status)}" if status else ""
    return _children(client(tracking_uri), parent, extra)


def read_json_artifact(tracking_uri: str, run_id: str, path: str) -> Any:
    """A JSON artifact of a run (e.g. a trial's ``model.json`` pointer), parsed."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client(tracking_uri).download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError) as e:
            raise FileNotFoundError(f"run {run_id} has no artifact {path!r} ({e})") from None
        with open(local) as f:
            return json.load(f)


# --------------------------------------------------------------------------- the sweep's parent run


class SweepTracker:
    """The experiment of a sweep name and the parent run of each sweep in it."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.client = client(tracking_uri)
        self.experiment_id = self._experiment(experiment)

    def _experiment(self, name: str) -> str:
        """Get or create; two launchers creating the same name at once both end up with the one."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            if found.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:  # made by an older vizsweep
                self.client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            return found.experiment_id
        kind = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
        try:
            return self.client.create_experiment(
                name, _default_artifact_location(self.tracking_uri), tags=kind
            )
        except MlflowException:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def find(self, sweep_id: str) -> Run | None:
        parents = _find_parents(self.client, sweep_id, [self.experiment_id])
        return parents[0] if parents else None

    def parent(self, sweep_id: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """The parent run's id, created on the first call; a resume gets the same run back, RUNNING again."""
        tags_ = {**safe_tags(tags), TAG_SWEEP: sweep_id, TAG_ROLE: "sweep"}
        params_ = safe_params(params)
        run = self.find(sweep_id)
        if run is None:
            run = self.client.create_run(self.experiment_id, tags=tags_, run_name=sweep_id)
            _log(self.client, run.info.run_id, params=[Param(k, v) for k, v in params_.items()])
            return run.info.run_id
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            self.client.update_run(run.info.run_id, status="RUNNING")
        _reopen_log(self.client, run, params_, tags_)
        return run.info.run_id

    def finish_parent(self, sweep_id: str, status: str = FINISHED) -> None:
        """Mark the sweep's parent run ended (FINISHED, FAILED or KILLED)."""
        _check_status(status)
        run = self.find(sweep_id)
        if run is None:
            raise LookupError(f"sweep {sweep_id!r} has no parent run in experiment {self.experiment_id}")
        self.client.set_terminated(run.info.run_id, status)
        if status == KILLED:  # `vizsweep stop`: the unfinished trials read "killed", not "running"
            for child in _children(self.client, run, "attributes.status = 'RUNNING'"):
                self.client.set_terminated(child.info.run_id, KILLED)

    def children(self, sweep_id: str) -> list[Run]:
        run = self.find(sweep_id)
        return _children(self.client, run) if run else []


def _check_status(status: str) -> None:
    if status not in _TERMINAL:
        raise ValueError(f"run status must be one of {sorted(_TERMINAL)}, not {status!r}")


# --------------------------------------------------------------------------- a trial's run


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among ``metrics`` (bools and text are not metrics)."""
    return {
        safe_key(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


class TrialRun:
    """The child run of one trial; a retried or resumed trial reopens its own run and continues it."""

    def __init__(self, c: MlflowClient, run: Run):
        self.client = c
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self._final = set(filter(None, run.data.tags.get(TAG_FINAL_METRICS, "").split(",")))
        self._last_step = self._highest_step(run)

    @staticmethod
    def _find(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_key: str) -> Run | None:
        """The trial's run under ``parent_run_id`` (found by its ``trial_key`` tag), or None."""
        flt = f"tags.`{TAG_PARENT}` = {search_literal(parent_run_id)} AND tags.`{TAG_TRIAL_KEY}` = {search_literal(trial_key)}"
        found = _search_all(client(tracking_uri), [experiment_id], flt)
        return found[0] if found else None

    @classmethod
    def finished(cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_key: str) -> bool:
        """Whether the trial's run under ``parent_run_id`` is FINISHED (a Tune restore may rerun a
        trial whose run ended just before the driver died)."""
        run = cls._find(tracking_uri, experiment_id, parent_run_id, trial_key)
        return run is not None and run.info.status == "FINISHED"

    @classmethod
    def fail(
        cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_key: str, reason: str
    ) -> None:
        """The trial's run FAILED, with ``reason`` in its ``vizsweep.status`` tag (when it has a run)."""
        run = cls._find(tracking_uri, experiment_id, parent_run_id, trial_key)
        if run is not None:
            c = client(tracking_uri)
            for k, v in safe_tags({"vizsweep.status": f"failed: {reason}"}).items():
                c.set_tag(run.info.run_id, k, v)
            c.set_terminated(run.info.run_id, "FAILED")

    @classmethod
    def open(
        cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_key: str, run_name: str,
        params: Mapping[str, Any], tags: Mapping[str, Any],
    ) -> TrialRun:  # fmt: skip
        """Find the trial's run under ``parent_run_id`` by ``trial_key`` and set it RUNNING, or create it."""
        c = client(tracking_uri)
        tags_ = {**safe_tags(tags), TAG_PARENT: parent_run_id, TAG_TRIAL_KEY: trial_key, TAG_ROLE: "trial"}
        params_ = safe_params(params)
        run = cls._find(tracking_uri, experiment_id, parent_run_id, trial_key)
        if run is not None:
            c.update_run(run.info.run_id, status="RUNNING")
            _reopen_log(c, run, params_, tags_)
        else:
            run = c.create_run(experiment_id, tags=tags_, run_name=run_name)
            _log(c, run.info.run_id, params=[Param(k, v) for k, v in params_.items()])
        return cls(c, run)

    def _highest_step(self, run: Run) -> int:
        """The last step a previous attempt logged, over every step metric (final metrics excluded)."""
        keys = [k for k in run.data.metrics if k not in self._final]
        steps = [m.step for k in keys for m in self.client.get_metric_history(self.run_id, k)]
        return max(steps, default=-1)

    @property
    def last_step(self) -> int:
        return self._last_step

    def log_step(self, metrics: Mapping[str, Any], step: int) -> bool:
        """Log the numeric ``metrics`` at ``step`` in one call; a step already logged is skipped.

        A retried trial restarts from its checkpoint, which may be older than
        the last step its failed attempt logged: those steps are not logged
        twice. Returns whether anything was logged.
        """
        if step <= self._last_step:
            return False
        values = _numeric(metrics)
        if not values:
            return False
        ts = _now_ms()
        _log(self.client, self.run_id, metrics=[Metric(k, v, ts, step) for k, v in values.items()])
        self._last_step = step
        return True

    def log_final(self, metrics: Mapping[str, Any]) -> None:
        """The trial's result metrics; missing (None) or non-numeric ones are left out."""
        values = _numeric(metrics)
        self._final |= set(values)
        ts = _now_ms()
        _log(
            self.client, self.run_id, metrics=[Metric(k, v, ts, 0) for k, v in values.items()],
            tags=[RunTag(TAG_FINAL_METRICS, truncate(",".join(sorted(self._final)), MAX_TAG_VALUE))],
        )  # fmt: skip

    def log_artifact(self, local_path: str | os.PathLike) -> None:
        """Upload a file (or folder) at the artifact root: the compare page shows only root artifacts."""
        self.client.log_artifact(self.run_id, os.fspath(local_path))

    def log_bytes(self, name: str, data: bytes) -> None:
        """``data`` as the file ``name`` at the artifact root (a trial's outputs come from the store or
        from memory, not from a local file)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            self.log_artifact(path)

    def tags(self) -> dict[str, str]:
        """The run's tags as MLflow holds them now."""
        return dict(self.client.get_run(self.run_id).data.tags)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        _log(self.client, self.run_id, tags=[RunTag(k, v) for k, v in safe_tags(tags).items()])

    def flush(self) -> None:
        """Nothing to wait for: this class's calls return once logged (``RemoteRun`` has its own)."""

    def finish(self, status: str = FINISHED) -> None:
        _check_status(status)
        self.client.set_terminated(self.run_id, status)
