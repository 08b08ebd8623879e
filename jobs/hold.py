"""A fault-injection point for the resume tests: hold a trial right after a checkpoint.

Killing a node or a driver "while a trial is between checkpoints" by polling races with
short trials; tests instead name attacks in the file ``$VIZSWEEP_HOLD_AFTER_CHECKPOINT``:
a trial of a named attack, once its checkpoint is written and reported, writes
``<file>.<attack>.held`` (the step) and waits while its name is still in the file. Unset (the
default), nothing happens.
"""

from __future__ import annotations

import os
import time

ENV = "VIZSWEEP_HOLD_AFTER_CHECKPOINT"


def _listed(path: str, attack: str) -> bool:
    try:
        with open(path) as f:
            return attack in f.read().split()
    except FileNotFoundError:
        return False


def hold_after_checkpoint(attack: str, step: int) -> None:
    """Block while ``attack`` is listed in the hold file (see the module docstring)."""
    path = os.environ.get(ENV)
    if not path or not _listed(path, attack):
        return
    with open(f"{path}.{attack}.held", "w") as f:
        f.write(str(step))
    while _listed(path, attack):
        time.sleep(0.05)
