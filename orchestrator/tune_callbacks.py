"""Tune callbacks (module level: Tune pickles them into the experiment state).

A leaf module: the live progress display registers itself in :data:`LISTENER`, so this
module imports nothing of the orchestrator (no import circle with ``orchestrator.progress``).
"""

from __future__ import annotations

from collections.abc import Callable

from ray.tune import Callback

LISTENER: Callable[[str, str, dict | None], None] | None = None  # set by orchestrator.progress.SweepProgress


def _relay(kind: str, trial, result: dict | None = None) -> None:
    if LISTENER is not None:
        LISTENER(kind, trial.trial_id, result)


class ProgressRelay(Callback):
    """Hands Tune's trial events to the live progress display, when one is listening."""

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
