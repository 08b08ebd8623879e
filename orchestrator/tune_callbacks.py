"""Tune callbacks (module level: Tune pickles them into the experiment state)."""

from __future__ import annotations

from ray.tune import Callback


def _relay(kind: str, trial, result: dict | None = None) -> None:
    from orchestrator.progress import SweepProgress

    if SweepProgress.current is not None:
        SweepProgress.current.event(kind, trial.trial_id, result)


class ProgressRelay(Callback):
    """Hands Tune's trial events to the live :class:`orchestrator.progress.SweepProgress`."""

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
