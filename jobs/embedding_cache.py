"""Embeddings e(x) of a split's images, kept in the store by image id and reused across trials.

Every trial's metrics stage embeds the top-k images of θ0 and of θ on each split (SCIENCE.md §3,
CLIP-δ). θ0's are the same for every trial on a variant's layer, and a control's θ keeps most of
them (the demo's `finetune` on conv5: 53 new images of 639), so each trial embedded hundreds of
images that an earlier one, or phase 2 (:func:`jobs.metrics.initial_embeddings`), already had.

Layout: ``{store}/embeddings/embedder={key}/split={split}/part-{ids key}.parquet`` with columns
``image_id`` and ``embedding`` (float32 [dim]). The key covers the embedder's record
(``Embedder.describe``: kind, weights, dim), the dataset's id and this code's version, so a
changed encoder or dataset never meets an old part. Each write is one whole part (atomic, named by
the content key of its ids: two writers of the same ids write the same file); no manifest lists
them: a reader takes the parts it can read and embeds again the ids a damaged or missing part
held, so the cache can only save work, never change a result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.metrics_inputs import embed_ids
from shared import store
from shared.embedders import Embedder
from shared.progress import Progress, no_progress

CODE_VERSION = "embeddings-v1"


def cache_uri(store_uri: str, embedder: Embedder, dataset: str, split: str) -> str:
    from shared.dataset_meta import dataset_id

    key = store.content_key(embedder.describe(), dataset_id(dataset), split, CODE_VERSION)
    return store.join(store_uri, "embeddings", f"embedder={key}", f"split={split}")


def read_cached(dir_uri: str, ids: set[str], dim: int) -> dict[str, np.ndarray]:
    """id -> e(x) for the ``ids`` that readable parts of the cache hold."""
    out: dict[str, np.ndarray] = {}
    for f in store.listdir(dir_uri):
        name = f.rsplit("/", 1)[-1]
        if not (name.startswith("part-") and name.endswith(".parquet")):
            continue  # a write's temporary file
        try:
            fs, path = store.resolve(f)
            table = pq.read_table(path, filesystem=fs)
            got = table.column("embedding").combine_chunks()
            if got.type.list_size != dim:
                continue
            vecs = got.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        except (OSError, KeyError, ValueError, pa.ArrowException):
            continue  # unreadable: its ids are embedded again
        for i, image_id in enumerate(table.column("image_id").to_pylist()):
            if image_id in ids:
                out[image_id] = vecs[i]
    return out


def write_part(dir_uri: str, embeddings: dict[str, np.ndarray]) -> str:
    """One part holding ``embeddings`` (id -> e(x)); returns its URI."""
    ids = sorted(embeddings)
    vecs = np.stack([embeddings[i] for i in ids]).astype(np.float32)
    table = pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1]),
        }
    )
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    uri = store.join(dir_uri, f"part-{store.content_key(ids, CODE_VERSION)}.parquet")
    store.write_bytes(uri, buf.getvalue().to_pybytes())
    return uri


def embed_cached(
    embedder: Embedder,
    dataset: str,
    split: str,
    ids: Sequence[str],
    store_uri: str,
    batch_size: int = 64,
    progress: Progress = no_progress,
) -> dict[str, np.ndarray]:
    """id -> e(x) for each id: from the store's cache, the rest embedded now and added to it."""
    d = cache_uri(store_uri, embedder, dataset, split)
    wanted = list(dict.fromkeys(ids))
    out = read_cached(d, set(wanted), embedder.dim)
    missing = [i for i in wanted if i not in out]
    if missing:
        new = embed_ids(embedder, dataset, split, missing, batch_size, progress)
        write_part(d, new)
        out.update(new)
    progress(len(wanted), len(wanted), phase="embed", split=split, cached=len(wanted) - len(missing))
    return out
