"""The one implementation of an activation table's decode, forward and part writing.

Both executors of :func:`jobs.activations.run_activations` call these functions (the
local streaming one in ``jobs.activations_local`` and the Ray Data one in
``jobs.activations_raydata``), so their tables are the same whichever ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared import store

SCORES = "scores"
MAX_CORRUPT_IDS = 100  # per written block: the manifest keeps a sample of the bad ids, not all of them


def decode(batch: dict, pre) -> dict:
    """Encoded images -> ``pixels`` + ``ok`` (bad images get ok=False and zero pixels)."""
    from shared.datasets import decode_batch

    return decode_batch(batch, pre)


def load_model(model: str, weights: str, device: str) -> tuple[Any, Any]:
    """(model in eval mode on its device, the device): CUDA when present unless ``device`` says otherwise."""
    from shared.device import pick_device
    from shared.models.zoo import build_model

    dev = pick_device(device)
    net, _ = build_model(model, weights=weights)
    return net.eval().to(dev), dev


def score_batch(net, model_name: str, layers: tuple[str, ...], device, amp: bool, batch: dict) -> pa.Table:
    """A decoded batch -> one row per image: image_id, label, ok and ``scores.<layer>`` (zeros when not ok)."""
    import torch

    from shared.device import autocast
    from shared.hooks import UnitScores

    ok = np.asarray(batch["ok"], dtype=bool)
    n = len(ok)
    pixels = np.asarray(batch["pixels"])
    pixels = torch.from_numpy(np.ascontiguousarray(pixels if ok.all() else pixels[ok])).to(device)
    scores: dict[str, np.ndarray] = {}
    if len(pixels):
        with torch.inference_mode(), autocast(device, amp):
            with UnitScores(net, model_name, list(layers)) as rec:
                rec.run(pixels, stop_early=True)  # the layers after the last hooked one are not needed
            scores = {k: v.float().cpu().numpy() for k, v in rec.scores.items()}
    full = {}
    for layer in layers:
        full[layer] = np.zeros((n, scores[layer].shape[1] if layer in scores else 0), dtype=np.float32)
        if layer in scores:
            full[layer][ok] = scores[layer]
    return scored_table(np.asarray(batch["image_id"]).astype(str), batch["label"], ok, full)


def scored_table(image_ids, labels, ok: np.ndarray, scores: dict[str, np.ndarray]) -> pa.Table:
    """image_id, label, ok and ``scores.<layer>`` ([n, J] float32 per layer; J = 0 gives nulls): the
    rows :func:`write_block` writes, whichever forward pass scored them."""
    n = len(ok)
    cols: dict[str, pa.Array] = {
        "image_id": pa.array(np.asarray(image_ids).astype(str), pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "ok": pa.array(np.asarray(ok, dtype=bool)),
    }
    for layer, x in scores.items():
        j = x.shape[1]
        flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), pa.float32())
        cols[f"{SCORES}.{layer}"] = pa.FixedSizeListArray.from_arrays(flat, j) if j else pa.nulls(n)
    return pa.table(cols)


def empty_result(layers) -> dict:
    return {"files": {layer: [] for layer in layers}, "rows": 0, "corrupt": 0, "corrupt_ids": []}


def write_block(table: pa.Table, dirs: dict[str, str], name: str) -> dict:
    """Write one scored block as part ``name`` of every layer's table; bad images are counted, not written.

    Returns ``{"files": {layer: [(name, rows, file_record)]}, "rows", "corrupt", "corrupt_ids"}``.
    """
    out = empty_result(dirs)
    if table.num_rows == 0:
        return out
    ok = table.column("ok").to_numpy(zero_copy_only=False)
    if not ok.all():
        bad = table.filter(pa.array(~ok))
        out["corrupt"] = bad.num_rows
        out["corrupt_ids"] = bad.column("image_id").to_pylist()[:MAX_CORRUPT_IDS]
        table = table.filter(pa.array(ok))
    out["rows"] = table.num_rows
    for layer, dir_uri in dirs.items():
        part = pa.table(
            {
                "image_id": table.column("image_id"),
                "label": table.column("label"),
                SCORES: table.column(f"{SCORES}.{layer}"),
            }
        )
        buf = pa.BufferOutputStream()
        pq.write_table(part, buf, compression="zstd")
        data = buf.getvalue().to_pybytes()
        store.write_bytes(store.join(dir_uri, name), data)
        out["files"][layer].append((name, part.num_rows, store.file_record(data)))  # size + checksum
    return out


def merge(into: dict, r: dict | None) -> dict:
    """Add one :func:`write_block` (or merged) result to ``into``."""
    if not r:
        return into
    for layer, fl in r["files"].items():
        into["files"][layer].extend(fl)
    into["rows"] += r["rows"]
    into["corrupt"] += r["corrupt"]
    into["corrupt_ids"].extend(r["corrupt_ids"])
    return into


def part_name(attempt: str, task: int, block: int) -> str:
    """Parts carry the attempt id: a killed attempt's parts are never named by a manifest, then swept."""
    return f"part-{attempt}-{task:05d}-{block:04d}.parquet"
