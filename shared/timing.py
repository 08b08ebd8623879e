"""Where a trial's wall time goes: named parts (train, eval, tables, ...) measured with perf_counter.

A :class:`PartTimer` charges every second since it started to at most one part: a part
entered inside another pauses the outer one, so the parts never sum to more than the wall
time, and ``other`` (start-up, model loads, data preparation, reports) is what is left.
The timer of the running trial is found through :func:`part` (a context variable), so the
jobs time their pieces without a timer argument on every function; with no active timer
:func:`part` does nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

PARTS = ("train", "eval", "tables", "metrics")  # always reported (0.0 when not measured)
WALL = "wall"


class PartTimer:
    """Seconds per named part of one trial, plus its wall time (``carried`` adds earlier attempts')."""

    def __init__(self, carried: Mapping[str, float] | None = None) -> None:
        self.start = self.mark = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.stack: list[str] = []
        self.carried: dict[str, float] = {}
        if carried:
            self.carry(carried)

    def carry(self, totals: Mapping[str, float]) -> None:
        """Add an earlier attempt's :meth:`totals` (a resumed trial: its parts up to its checkpoint)."""
        for name, s in totals.items():
            if isinstance(s, int | float) and not isinstance(s, bool) and s >= 0:
                self.carried[name] = self.carried.get(name, 0.0) + float(s)

    def _flush(self) -> None:
        now = time.perf_counter()
        if self.stack:
            top = self.stack[-1]
            self.seconds[top] = self.seconds.get(top, 0.0) + now - self.mark
        self.mark = now

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Charge the time inside to ``name`` (not to an enclosing part)."""
        if not name or name == WALL or name == "other":
            raise ValueError(f"part name {name!r}: give a name other than '', {WALL!r} and 'other'")
        self._flush()
        self.stack.append(name)
        try:
            yield
        finally:
            self._flush()
            self.stack.pop()

    def totals(self) -> dict[str, float]:
        """Seconds per part and ``wall``, earlier attempts included (what a checkpoint keeps)."""
        self._flush()
        out = dict(self.carried)
        for name, s in self.seconds.items():
            out[name] = out.get(name, 0.0) + s
        out[WALL] = out.get(WALL, 0.0) + time.perf_counter() - self.start
        return out

    def costs(self) -> dict[str, float]:
        """Final metrics: ``{part}_s`` for PARTS and every measured part, ``other_s`` and ``wall_s``."""
        t = self.totals()
        wall = t.pop(WALL)
        parts = {name: 0.0 for name in PARTS} | t
        named = sum(parts.values())
        out = {f"{name}_s": s for name, s in parts.items()}
        return out | {"other_s": max(0.0, wall - named), "wall_s": wall}


_CURRENT: ContextVar[PartTimer | None] = ContextVar("vizsweep_part_timer", default=None)


def current() -> PartTimer | None:
    """The active timer (see :func:`active`), or None."""
    return _CURRENT.get()


@contextlib.contextmanager
def active(timer: PartTimer) -> Iterator[PartTimer]:
    """Make ``timer`` the one :func:`part` charges, for the block."""
    token = _CURRENT.set(timer)
    try:
        yield timer
    finally:
        _CURRENT.reset(token)


def part(name: str) -> contextlib.AbstractContextManager[None]:
    """``with part("eval"):`` charges the block to the active timer's part; nothing without one."""
    timer = _CURRENT.get()
    return timer.part(name) if timer is not None else contextlib.nullcontext()


def share_outside(costs: Mapping[str, float], science: tuple[str, ...] = ("train", "eval")) -> float:
    """The share of ``wall_s`` spent outside the ``science`` parts (training steps and evaluations)."""
    wall = costs.get("wall_s", 0.0)
    inside = sum(costs.get(f"{name}_s", 0.0) for name in science)
    return 0.0 if wall <= 0 else max(0.0, 1.0 - inside / wall)
