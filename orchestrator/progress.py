"""The one progress display vizsweep shows (Ray's own bars and logs are silenced)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


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
