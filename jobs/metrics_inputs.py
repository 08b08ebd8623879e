"""Inputs of the metrics stage (SCIENCE.md §3): D_τ and its score rows, top-k sets and their columns,
dead units and decoy hits, and the embeddings of top-k images (split off jobs/metrics.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.activations import iter_table, scores_of
from shared import store
from shared.metrics import dead_units, decoy_in_top
from shared.progress import Progress, no_progress

if TYPE_CHECKING:
    from shared.embedders import Embedder

DECOY_TOP = 5  # decoy_top5: a decoy-class image among a unit's first 5 (thesis Fig. H)


def unit_states(
    topks: Sequence[pa.Table], j: int, k: int, decoy_class: int | None
) -> dict[str, np.ndarray | None]:
    """dead_init, dead_final (§3) and decoy_top5 (when ``decoy_class`` is given) per unit of a split,
    from the split's init and final top-k tables."""
    t_init, t_final = topks
    out: dict[str, np.ndarray | None] = {
        "dead_init": dead_units(topk_column(t_init, "score", j, k)),
        "dead_final": dead_units(topk_column(t_final, "score", j, k)),
        "decoy_top5": None,
    }
    if decoy_class is not None:
        labels = topk_column(t_final, "label", j, k)
        out["decoy_top5"] = decoy_in_top(labels, decoy_class, DECOY_TOP)
    return out


def topk_column(topk: pa.Table, name: str, j: int, k: int) -> np.ndarray:
    """[J, k] values of one column of a top-k table (every unit has k rows: see set_array), rank order."""
    t = topk.sort_by([("unit", "ascending"), ("rank", "ascending")])
    return t.column(name).to_numpy(zero_copy_only=False).reshape(j, k)


def tau_subset(dataset: str, split: str, size: int, seed: int) -> np.ndarray:
    """D_τ: ``size`` image ids of ``split`` drawn with ``seed`` (all of them when fewer), sorted.

    Drawn from the split's image index (sorted ids), so it depends only on the dataset and the
    seed, never on the order in which a pipeline wrote the rows.
    """
    from shared.image_index import build_index

    fs, path = store.resolve(build_index(dataset, split))
    ids = np.asarray(pq.read_table(path, filesystem=fs, columns=["image_id"]).column("image_id").to_pylist())
    if len(ids) <= size:
        return ids
    pick = np.random.default_rng(seed).choice(len(ids), size=size, replace=False)
    return ids[np.sort(pick)]


def _rows(table_dir: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    """id -> score row, for the rows of a committed table whose id is in ``ids`` (streamed)."""
    wanted = pa.array(ids, pa.string())
    out: dict[str, np.ndarray] = {}
    for batch in iter_table(table_dir):
        hit = pc.is_in(batch.column("image_id"), value_set=wanted)
        sub = batch.filter(hit)
        if sub.num_rows:
            out.update(zip(sub.column("image_id").to_pylist(), scores_of(sub)))
    return out


def tau_scores(init_dir: str, final_dir: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, a(·; θ0) [n, J], a(·; θ) [n, J]) on the D_τ images both tables hold, rows aligned by id.

    Images a table lacks (undecodable ones are never written) drop out of both.
    """
    a, b = _rows(init_dir, ids), _rows(final_dir, ids)
    common = [i for i in ids if i in a and i in b]
    if len(common) < 2:
        raise ValueError(
            f"only {len(common)} D_τ image(s) in both {init_dir} and {final_dir}: Kendall-τ needs 2"
        )
    return np.asarray(common), np.stack([a[i] for i in common]), np.stack([b[i] for i in common])


def set_array(topk: pa.Table, j: int, k: int) -> np.ndarray:
    """[J, k] image ids of each unit's top-k, in rank order."""
    from shared.topk import topk_sets

    sets = topk_sets(topk)
    short = [u for u in range(j) if len(sets.get(u, ())) != k]
    if short:
        raise ValueError(
            f"units {short[:5]} have fewer than k={k} top images: the split has fewer than k images"
        )
    return np.asarray([sets[u] for u in range(j)], dtype=object)


def emb_array(sets: np.ndarray, emb: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([np.stack([emb[i] for i in row]) for row in sets])


def embed_ids(
    embedder: Embedder,
    dataset: str,
    split: str,
    ids: Sequence[str],
    batch_size: int = 64,
    progress: Progress = no_progress,
    chunk: int = 512,
) -> dict[str, np.ndarray]:
    """id -> e(x) for each id, fetched by id and embedded once, ``chunk`` images in memory at a time."""
    from shared.image_index import fetch_images

    out: dict[str, np.ndarray] = {}
    for s in range(0, len(ids), chunk):
        part = list(ids[s : s + chunk])
        raw = fetch_images(dataset, split, part)
        out.update(zip(part, embedder.embed_images([raw[i] for i in part], batch_size=batch_size)))
        progress(len(out), len(ids), phase="embed", split=split)
    return out
