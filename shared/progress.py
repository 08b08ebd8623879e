"""The progress callback every job takes, so jobs never import Tune or a UI."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, done: int, total: int | None = None, **info: object) -> None: ...


def no_progress(done: int, total: int | None = None, **info: object) -> None:
    """Default callback: report nothing."""
