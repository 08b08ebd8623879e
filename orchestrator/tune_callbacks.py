"""Tune callbacks (module level: Tune pickles them into the experiment state).

A leaf module: the live progress display and the trials' pictures register themselves in
:data:`LISTENERS`, so this module imports nothing of the orchestrator but the leaf
``orchestrator.status`` (no import circle with ``orchestrator.progress``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ray.tune import Callback
from ray.tune.stopper import Stopper

from orchestrator.status import stop_requested

# (kind, trial id, result or None, the trial's config): orchestrator.progress.SweepProgress and
# orchestrator.pictures.TrialPictures add themselves while they are active
Listener = Callable[[str, str, "dict | None", dict], None]
LISTENERS: list[Listener] = []


class _DropTrialTracebacks(logging.Filter):
    """Tune logs a whole traceback for every failed trial attempt (a lost worker's ActorDiedError
    too, although the trial recovers); the sweep prints one line per failure or retry instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Trial task failed") or msg.startswith("Trials did not complete"))


def quiet_trial_errors() -> None:
    """Install :class:`_DropTrialTracebacks` on the two Tune loggers that print them (once)."""
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTrialTracebacks) for f in log.filters):
            log.addFilter(_DropTrialTracebacks())


def _relay(kind: str, trial, result: dict | None = None) -> None:
    for listen in list(LISTENERS):
        listen(kind, trial.trial_id, result, trial.config or {})


class TrialEvents(Callback):
    """Hands Tune's trial events to every listener in :data:`LISTENERS`."""

    def on_trial_start(self, iteration, trials, trial, **info):
        _relay("start", trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        _relay("start", trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        _relay("result", trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        _relay("complete", trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        _relay("error", trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        # an infrastructure fault (the trial itself fails once on bad input): Tune runs it again
        name = (trial.config or {}).get("plan", {}).get("run_name", trial.trial_id)
        _relay("retry", trial, {"name": name, "failures": trial.run_metadata.num_failures})


class StopRequest(Stopper):
    """Ends the whole experiment once ``vizsweep stop`` asked for it (the request file is read at
    most every ``poll_s`` seconds: on S3 each look is a request). Trials end like a killed driver's
    do: each keeps its last checkpoint, and ``vizsweep resume`` continues from there."""

    def __init__(self, sweep_dir: str, poll_s: float = 2.0) -> None:
        self.sweep_dir, self.poll_s = sweep_dir, poll_s
        self._checked, self._seen = float("-inf"), False

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self._seen and now - self._checked >= self.poll_s:
            self._checked, self._seen = now, stop_requested(self.sweep_dir)
        return self._seen
