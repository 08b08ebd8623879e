"""Top-k sets per unit from a committed activation table, and their picture."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jobs.activations import iter_table, scores_of
from shared import integrity, store
from shared.grid import GridRow, render_grid
from shared.progress import Progress, no_progress
from shared.topk import StreamingTopK, topk_sets

CODE_VERSION = "topk-v1"


@dataclass
class TopKResult:
    uri: str  # folder holding topk.parquet and its manifest
    table: pa.Table  # unit, rank, image_id, label, score
    skipped: bool
    seconds: float


def topk_uri(table_dir: str, k: int) -> str:
    """``.../activations/<partitions>`` -> ``.../topk/<partitions>/k=<k>`` (kept out of the tables' tree)."""
    table_dir = store.normalize(table_dir)
    if "/activations/" not in table_dir:
        raise ValueError(f"{table_dir} is not an activation table folder (expected .../activations/...)")
    return store.join(table_dir.replace("/activations/", "/topk/", 1), f"k={k}")


def run_topk(table_dir: str, k: int = 10, progress: Progress = no_progress) -> TopKResult:
    """Streaming top-k of every unit (memory O(k x units), whatever the table's size)."""
    t0 = time.time()
    m = integrity.intact_manifest(table_dir)
    if m is None:
        raise FileNotFoundError(
            f"activation table {table_dir} is not committed (no _MANIFEST.json) or its files are damaged: "
            "compute it first (a launch or resume recomputes it)"
        )
    out = topk_uri(table_dir, k)
    key = store.content_key(m["key"], k, CODE_VERSION)
    done = integrity.intact_manifest(out)
    if done is not None and done.get("key") == key:
        try:
            return TopKResult(out, read_topk(out), True, time.time() - t0)
        except integrity.CorruptStage as e:  # removed by the read: computed again below
            integrity.log.warning("%s", e)
    integrity.prepare_recompute(out)
    acc = StreamingTopK(m["units"], k)
    for batch in iter_table(table_dir):
        acc.update(
            scores_of(batch),
            batch.column("image_id").to_numpy(zero_copy_only=False),
            batch.column("label").to_numpy(),
        )
        progress(acc.seen, m["rows"], phase="topk")
    table = acc.table()
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    store.write_bytes(store.join(out, "topk.parquet"), buf.getvalue().to_pybytes())
    store.write_manifest(
        out,
        {
            "kind": "topk",
            "key": key,
            "k": k,
            "files": ["topk.parquet"],
            "table": table_dir,
            "units": m["units"],
            "rows_seen": acc.seen,
        },
    )
    return TopKResult(out, table, False, time.time() - t0)


def read_topk(topk_dir: str) -> pa.Table:
    """The committed top-k table, checked against its manifest (a damaged one is named and removed)."""
    m = store.read_manifest(topk_dir)
    if m is None:
        raise store.StoreError(f"top-k stage {topk_dir} is not complete: no {store.MANIFEST} (run it)")
    (f,) = m["files"]
    return integrity.read_parquet(topk_dir, f, m)


def render_topk_grid(
    dataset: str,
    split: str,
    topk: pa.Table,
    units: list[int],
    out_uri: str,
    classes: list[str] | None = None,
    n: int = 5,
    title: str = "",
) -> str:
    """Top-``n`` images of ``units`` as a PNG grid with class names; images fetched by id, no scan."""
    from shared.image_index import fetch_images

    sets = topk_sets(topk)
    missing = [u for u in units if u not in sets]
    if missing:
        raise ValueError(f"units {missing} not in the top-k table (it has units 0..{max(sets)})")
    scores = {
        (u, r): s
        for u, r, s in zip(
            topk.column("unit").to_pylist(), topk.column("rank").to_pylist(), topk.column("score").to_pylist()
        )
    }
    labels = dict(zip(topk.column("image_id").to_pylist(), topk.column("label").to_pylist()))
    wanted = sorted({i for u in units for i in sets[u][:n]})
    images = fetch_images(dataset, split, wanted)
    rows = []
    for u in units:
        ids = sets[u][:n]
        caps = [
            f"{classes[labels[i]] if classes else labels[i]}\n{scores[(u, r)]:.3g}" for r, i in enumerate(ids)
        ]
        rows.append(GridRow(f"unit {u}", [Image.open(io.BytesIO(images[i])) for i in ids], caps))
    png = render_grid(rows, title=title)
    store.write_bytes(out_uri, png)
    return out_uri
