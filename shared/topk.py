"""Streaming top-k images per unit (SCIENCE.md §1): memory independent of dataset size.

Order: larger score first; equal scores broken by image id (ascending), so
the result does not depend on the order in which batches arrive.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa


class StreamingTopK:
    """Keeps, per unit, the k best (score, image_id, label) seen so far."""

    def __init__(self, num_units: int, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.num_units = num_units
        self.k = k
        self.scores = np.empty((0, num_units), dtype=np.float32)
        self.ids = np.empty((0, num_units), dtype=object)
        self.labels = np.empty((0, num_units), dtype=np.int64)
        self.seen = 0

    def update(self, scores: np.ndarray, image_ids: np.ndarray, labels: np.ndarray) -> None:
        """Merge one batch: ``scores`` [N, J], ``image_ids`` [N], ``labels`` [N]."""
        scores = np.asarray(scores, dtype=np.float32)
        n, j = scores.shape
        if j != self.num_units:
            raise ValueError(f"batch has {j} units, expected {self.num_units}")
        if n == 0:
            return
        self.seen += n
        ids = np.asarray(image_ids).astype(str)
        labels = np.asarray(labels, dtype=np.int64)
        if n > self.k:
            # Cheap pre-selection: anything below the k-th largest score of its column
            # cannot enter the top-k; keep ties at the threshold for the id tie-break.
            kth = np.partition(scores, n - self.k, axis=0)[n - self.k]
            keep_rows = np.flatnonzero((scores >= kth).any(axis=1))
            scores, ids, labels = scores[keep_rows], ids[keep_rows], labels[keep_rows]
            n = len(keep_rows)
        cand_s = np.concatenate([self.scores, scores], axis=0)
        cand_i = np.concatenate([self.ids, np.repeat(ids[:, None], j, axis=1).astype(object)], axis=0)
        cand_l = np.concatenate([self.labels, np.repeat(labels[:, None], j, axis=1)], axis=0)
        # lexsort sorts by the last key first: score descending, then id ascending.
        order = np.lexsort((cand_i.astype(str), -cand_s), axis=0)[: self.k]
        self.scores = np.take_along_axis(cand_s, order, axis=0)
        self.ids = np.take_along_axis(cand_i, order, axis=0)
        self.labels = np.take_along_axis(cand_l, order, axis=0)

    def table(self) -> pa.Table:
        """One row per (unit, rank): unit, rank, image_id, label, score."""
        k_eff, j = self.scores.shape
        return pa.table(
            {
                "unit": pa.array(np.tile(np.arange(j), k_eff), pa.int64()),
                "rank": pa.array(np.repeat(np.arange(k_eff), j), pa.int64()),
                "image_id": pa.array(self.ids.reshape(-1).astype(str), pa.string()),
                "label": pa.array(self.labels.reshape(-1), pa.int64()),
                "score": pa.array(self.scores.reshape(-1), pa.float32()),
            }
        ).sort_by([("unit", "ascending"), ("rank", "ascending")])


def topk_from_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], num_units: int, k: int
) -> pa.Table:
    acc = StreamingTopK(num_units, k)
    for scores, ids, labels in batches:
        acc.update(scores, ids, labels)
    return acc.table()


def topk_sets(table: pa.Table) -> dict[int, list[str]]:
    """unit -> image ids in rank order, from a table made by :meth:`StreamingTopK.table`."""
    out: dict[int, list[str]] = {}
    for unit, image_id in zip(table.column("unit").to_pylist(), table.column("image_id").to_pylist()):
        out.setdefault(unit, []).append(image_id)
    return out
