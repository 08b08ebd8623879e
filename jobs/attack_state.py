"""Attack checkpoints: everything needed to continue a run exactly, loadable with ``weights_only=True``.

A checkpoint is ``{checkpoint_dir}/step-{step:09d}/state.pt`` (a folder, as Tune's
``Checkpoint.from_directory`` wants), written atomically through the store so a file
or ``s3://`` location works. It holds weights, Adam state, step, α (and whether it
waits for a scheduler's decision), the metric history and the RNG states; the data
position follows from the step, as the data order is a function of (seed, epoch).
Only tensors, numbers, strings, lists and dicts go in: checkpoints travel between
machines, and ``weights_only`` refuses anything that could run code.
"""

from __future__ import annotations

import io
import posixpath
import random
import re
from typing import Any

import numpy as np
import torch

from shared import store

FORMAT = "vizsweep-attack-state-v1"
STATE_FILE = "state.pt"
_STEP_DIR = re.compile(r"^step-(\d{9})$")


class ResumeError(ValueError):
    """A checkpoint is missing, malformed or belongs to another attack spec."""


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy's and Python's global generators, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },  # fmt: skip
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def save_state(checkpoint_dir: str, step: int, state: dict[str, Any], keep: int) -> str:
    """Write ``state`` as the step's checkpoint folder, keep the newest ``keep``; returns the folder URI."""
    folder = store.join(checkpoint_dir, f"step-{step:09d}")
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    store.write_bytes(store.join(folder, STATE_FILE), buf.getvalue())
    for old in _step_dirs(checkpoint_dir)[:-keep]:
        if old != folder:
            store.delete(old)
    return folder


def _step_dirs(checkpoint_dir: str) -> list[str]:
    """Step folders that hold a state file, oldest first."""
    dirs = [d for d in store.list_subdirs(checkpoint_dir) if _STEP_DIR.match(posixpath.basename(d))]
    return sorted(d for d in dirs if store.exists(store.join(d, STATE_FILE)))


def find_checkpoint(path: str) -> str:
    """The state file for ``path``: a ``state.pt``, a step folder, or a checkpoint_dir (newest step)."""
    uri = store.normalize(path)
    if store.exists(uri) and not store.is_dir(uri):
        return uri
    if store.exists(store.join(uri, STATE_FILE)):
        return store.join(uri, STATE_FILE)
    steps = _step_dirs(uri) if store.is_dir(uri) else []
    if not steps:
        raise ResumeError(
            f"no attack checkpoint at {uri}: expected a {STATE_FILE}, a step-NNNNNNNNN folder holding one, "
            f"or a checkpoint_dir with such folders"
        )
    return store.join(steps[-1], STATE_FILE)


def load_state(uri: str, key: str) -> dict[str, Any]:
    """Load and check a state file: right format, written for the spec whose key is ``key``."""
    try:
        state = torch.load(io.BytesIO(store.read_bytes(uri)), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for pickled code, RuntimeError for a broken zip
        raise ResumeError(f"cannot load attack checkpoint {uri} with weights_only=True: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ResumeError(f"{uri} is not an attack checkpoint (format {found!r}, expected {FORMAT!r})")
    if state.get("key") != key:
        raise ResumeError(
            f"checkpoint {uri} belongs to attack key {state.get('key')!r}, not {key!r}: the spec differs from the "
            f"one that wrote it (resume with the same AttackSpec, or start without resume_from)"
        )
    return state
