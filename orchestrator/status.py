"""Where a sweep lives in the store and what state it is in (a leaf: imported by the phases)."""

from __future__ import annotations

import time
from typing import Any

from shared import store

TUNE_DIR = "tune"


def sweep_id_for(spec: Any) -> str:
    """A sweep's id: its name plus the content key of its spec (the same spec finds the same sweep)."""
    return f"{spec.name}-{store.content_key(spec.to_dict())[:8]}"


def sweep_dir(store_uri: str, sweep_id: str) -> str:
    return store.join(store_uri, "sweeps", sweep_id)


def write_status(sdir: str, **fields: Any) -> None:
    """Merge ``fields`` into the sweep's status.json (what ``vizsweep status`` shows)."""
    uri = store.join(sdir, "status.json")
    old = store.read_json(uri) if store.exists(uri) else {}
    store.write_json(uri, {**old, **fields, "updated": time.time()})
