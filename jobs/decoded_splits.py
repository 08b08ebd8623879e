"""The decoded train split that this process holds, so that nothing decodes it twice.

A trial decodes its whole train split once for its steps (:class:`jobs.train_stream.TrainStream`,
when the split fits its cache) and then computes its final activation tables over the same split
(:mod:`jobs.activations_local`), which read and decoded every image again: 4,800 JPEGs on the
demo, as many as the steps themselves. The same trial actor's next trial (Tune reuses actors)
decoded it a third time. Both now take the split kept here.

Identical results, not close ones: the pixels come from the same function
(``shared.datasets.decode_batch``) with the same preprocessing, in the same shard order as the
record reader (``shared.image_index.shard_order``). One split is kept (the newest): memory stays
within the cache budget the caller decoded it under.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.dataset_meta import dataset_id


@dataclass(frozen=True)
class DecodedSplit:
    """A whole split in shard order: ``pixels`` (N, 3, crop, crop) float32, ``label``, ``ok``, ``image_id``."""

    dataset: str  # its content key (shared.dataset_meta.dataset_id): a dataset rewritten in place is not it
    split: str
    pre: Any  # shared.datasets.Preprocess (frozen: compared by value)
    arrays: dict[str, np.ndarray]

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive batches, as ``jobs.activation_parts.decode`` returns them (views: read only)."""
        n = len(self.arrays["ok"]) if limit is None else min(limit, len(self.arrays["ok"]))
        for start in range(0, n, batch_size):
            yield {k: v[start : min(start + batch_size, n)] for k, v in self.arrays.items()}


_kept: DecodedSplit | None = None  # one name bound at a time: no lock needed


def keep(dataset: str, split: str, pre: Any, arrays: dict[str, np.ndarray]) -> None:
    """Keep a decoded split (it replaces the one kept before). ``arrays``: pixels, label, ok, image_id."""
    missing = {"pixels", "label", "ok", "image_id"} - set(arrays)
    if missing:
        raise ValueError(f"decoded_splits.keep: arrays lack {sorted(missing)}")
    global _kept
    _kept = DecodedSplit(dataset_id(dataset), split, pre, dict(arrays))


def find(dataset: str, split: str, pre: Any) -> DecodedSplit | None:
    """The kept split when it is this one, decoded with this preprocessing; else None."""
    d = _kept
    if d is None or d.split != split or d.pre != pre or d.dataset != dataset_id(dataset):
        return None
    return d


def forget() -> None:
    """Drop the kept split (before decoding another, so that two never sit in memory at once)."""
    global _kept
    _kept = None
