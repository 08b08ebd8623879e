"""Argument types of the ``vizsweep`` command line: a number out of range is an argparse error (exit 2).

The error names the option and the valid range (``argument --batch-size: 0 is out of range;
valid: >= 1``) before any command runs, so a bad option never reaches a job or Ray.
"""

from __future__ import annotations

import argparse


def int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi]; argparse names the option in its error (exit 2)."""
    valid = f"{lo}..{hi}" if hi is not None else f">= {lo}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer ({valid}), got {text[:40]!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range; valid: {valid}")
        return value

    parse.__name__ = f"integer {valid}"
    return parse


POSITIVE, NON_NEGATIVE = int_in(1), int_in(0)
