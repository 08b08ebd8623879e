"""The one progress display vizsweep shows (Ray's own bars and logs are silenced)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from orchestrator.status import write_status


class Bar:
    """A ``Progress`` callback drawing one tqdm bar per phase."""

    def __init__(self, desc: str, unit: str = "img") -> None:
        self.desc, self.unit = desc, unit
        self._bar: tqdm | None = None
        self._phase: str | None = None
        self.t0 = time.time()

    def __call__(self, done: int, total: int | None = None, **info: object) -> None:
        phase = str(info.pop("phase", self.desc))
        if self._bar is None or phase != self._phase:
            self.close()
            self._phase_t0 = time.time() if self._phase is not None else self.t0
            self._phase = phase
            self._bar = tqdm(
                total=total, desc=f"{self.desc}: {phase}" if phase != self.desc else self.desc,
                unit=self.unit, file=sys.stderr, dynamic_ncols=True, leave=True, mininterval=0.5,
            )  # fmt: skip
            self._bar.start_t = self._bar.last_print_t = self._phase_t0
        bar = self._bar
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        if info:
            bar.set_postfix(
                {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in info.items()}, refresh=False
            )
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SweepProgress:
    """One line for the attack phase: trials done / running / failed and the time left.

    Tune pickles its callbacks into the experiment state and a restored experiment
    brings back that copy, so the callback only holds the sweep folder and looks up
    the live display here (:attr:`current`) when it fires.
    """

    current: SweepProgress | None = None

    def __init__(self, total: int, done: int, sweep_dir: str, quiet: bool = False) -> None:
        self.total, self.done, self.sweep_dir, self.quiet = total, done, sweep_dir, quiet
        self.running: set[str] = set()
        self.failed = 0
        self.failed_ids: set[str] = set()  # trials that failed on their input (they end "complete")
        self.t0 = time.time()
        self.durations: list[float] = []
        self.started: dict[str, float] = {}
        self.bar = None if quiet else tqdm(total=total, initial=done, desc="attacks", unit="trial",
                                            file=sys.stderr, dynamic_ncols=True)  # fmt: skip
        SweepProgress.current = self
        from orchestrator import tune_callbacks  # Tune only when a sweep runs, not for a Bar

        tune_callbacks.LISTENERS.append(self.event)

    def event(self, kind: str, trial_id: str, result: dict | None = None, config: dict | None = None) -> None:
        now = time.time()
        if kind == "start":
            self.running.add(trial_id)
            self.started.setdefault(trial_id, now)
        elif kind == "result" and result and result.get("failed_trial"):
            self.failed_ids.add(trial_id)
            self._line(f"trial {result.get('error', '?')} (bad input: not retried)")
        elif kind == "retry" and result:
            self.running.discard(trial_id)
            self._line(f"trial {result['name']}: lost its worker or node (failure {result['failures']}); "
                       "Tune runs it again from its last checkpoint")  # fmt: skip
        elif kind in ("complete", "error"):
            self.running.discard(trial_id)
            if kind == "error" or trial_id in self.failed_ids:
                self.failed += 1
            else:
                self.done += 1
                self.durations.append(now - self.started.get(trial_id, self.t0))
        self._show(result)

    def _line(self, text: str) -> None:
        """One line above the bar (or alone when quiet: failures are never silent)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def eta(self) -> float | None:
        if not self.durations:
            return None
        left = self.total - self.done - self.failed
        per = sum(self.durations) / len(self.durations)
        return left * per / max(1, len(self.running) or 1)

    def _show(self, result: dict | None) -> None:
        eta = self.eta()
        info = {"running": len(self.running), "failed": self.failed}
        if eta is not None:
            info["left"] = f"{eta / 60:.1f} min"
        if result and "acc_drop" in result:
            info["α"] = f"{result.get('alpha', 0):.3g}"
            info["drop"] = f"{result['acc_drop']:.2f}pp"
        write_status(self.sweep_dir, done=self.done, running=len(self.running), failed_count=self.failed)
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix(info, refresh=False)
            self.bar.refresh()

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # also when a round raises: no later sweep's events reach this display

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        SweepProgress.current = None
        from orchestrator import tune_callbacks

        if self.event in tune_callbacks.LISTENERS:
            tune_callbacks.LISTENERS.remove(self.event)
