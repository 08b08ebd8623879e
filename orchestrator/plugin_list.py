"""``vizsweep list KIND``: the registered plugins of one kind, one line each (like ``timm.list_models``).

Reads :data:`shared.plugins.KINDS`; imports neither Ray nor MLflow, so it answers in the time it
takes to import the kind's registry.
"""

from __future__ import annotations

import difflib
import sys
from typing import TextIO

from shared.plugins import kinds, listing


class UnknownKind(ValueError):
    """``vizsweep list`` was given a kind that has no registry (the CLI exits 2)."""


def cmd_list(kind: str, out: TextIO | None = None) -> int:
    """Print ``name  description`` for every entry of ``kind``, sorted by name; returns the exit code."""
    valid = kinds()
    if kind not in valid:
        close = difflib.get_close_matches(kind, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownKind(f"unknown plugin kind {kind!r}{hint}; valid kinds: {', '.join(valid)}")
    out = out or sys.stdout
    rows = listing(kind)
    width = max((len(n) for n, _ in rows), default=0)
    for name, description in rows:
        print(f"{name:<{width}}  {description}".rstrip(), file=out)
    return 0
