"""Checkpoint files: our ``vizsweep-model-v1`` record or a bare state_dict, from any store URI.

Loading always uses ``torch.load(..., weights_only=True)``: a pickled checkpoint can
run arbitrary code, and checkpoints travel between machines and buckets.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import torch

from shared import store

FORMAT = "vizsweep-model-v1"


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or is not in a format we accept."""


def cache_dir() -> str:
    """Where remote checkpoints are copied before loading (``VIZSWEEP_CACHE``, else ``~/.cache/vizsweep``)."""
    root = os.environ.get("VIZSWEEP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vizsweep")
    return os.path.join(root, "models")


def local_copy(uri: str) -> str:
    """A local path holding the file at ``uri``; S3 objects are downloaded once per (uri, size, mtime)."""
    local = store.local_path(uri)
    if local is not None:
        if not os.path.isfile(local):
            raise CheckpointError(f"checkpoint not found: {uri} (expected a file)")
        return local
    fs, path = store.resolve(uri)
    info = fs.get_file_info(path)
    if info.size is None:
        raise CheckpointError(f"checkpoint not found: {uri}")
    # Size and mtime in the cache key: an overwritten object is fetched again, not served stale.
    tag = hashlib.sha256(f"{store.normalize(uri)}|{info.size}|{info.mtime_ns}".encode()).hexdigest()[:16]
    dest = os.path.join(cache_dir(), tag, os.path.basename(path) or "model.pt")
    if not os.path.exists(dest):
        store.download_file(uri, dest)
    return dest


def read_checkpoint(uri: str) -> dict:
    """Load a checkpoint as ``{"format", "model", "num_classes", "state_dict", "meta"}``.

    A bare state_dict (e.g. torchvision's ``.pth``) comes back with ``format``,
    ``model`` and ``num_classes`` set to None and an empty ``meta``.
    """
    path = local_copy(uri)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for pickled code, RuntimeError for a broken zip
        raise CheckpointError(
            f"cannot load checkpoint {uri} with weights_only=True ({type(e).__name__}: {e}); "
            f"save it with shared.models.save_checkpoint, or as a plain state_dict (torch.save(model.state_dict(), f))"
        ) from e
    if isinstance(obj, dict) and "format" in obj:
        if obj["format"] != FORMAT:
            raise CheckpointError(
                f"checkpoint {uri} has format {obj['format']!r}; supported: {FORMAT!r} or a bare state_dict"
            )
        missing = {"model", "num_classes", "state_dict"} - set(obj)
        if missing:
            raise CheckpointError(f"checkpoint {uri} ({FORMAT}) lacks {sorted(missing)}")
        return {"meta": {}, **obj}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": None, "model": None, "num_classes": None, "state_dict": obj, "meta": {}}
    kind = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {sorted(obj)[:8]}"
    raise CheckpointError(
        f"checkpoint {uri} holds a {kind}; expected a {FORMAT!r} record or a bare state_dict of tensors"
    )


def write_checkpoint(uri: str, model_name: str, num_classes: int, state_dict: dict, meta: dict) -> None:
    """Write our record atomically through the store; ``meta`` must be JSON-able (it goes into manifests too)."""
    try:
        json.dumps(meta)
    except TypeError as e:
        raise CheckpointError(f"checkpoint meta must be JSON-able (str, numbers, lists, dicts): {e}") from e
    payload = {
        "format": FORMAT,
        "model": model_name,
        "num_classes": int(num_classes),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "meta": meta,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    store.write_bytes(uri, buf.getvalue())
