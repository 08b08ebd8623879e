"""D_fool for Active fooling (SCIENCE.md §6): 2x2 collages showing two dataset classes c1 and c2.

Heo et al. paste two African-elephant and two fire-engine images into a 2x2 grid, the
cells of each class drawn at random so a model cannot learn fixed positions; 1,100
collages train, 200 are held out for the FSR. Here ``images`` collages are split in
Heo's proportion 11:2. Train collages take their tiles from ``train_split``, held-out
ones from ``heldout_split``, so no held-out tile was seen in fine-tuning.

Output: ``{store}/collages/{key}/parquet/{train,heldout}/part-00000.parquet`` (the
dataset shard schema, readable by ``shared.datasets`` with ``label`` = c1, plus
``c1``, ``c2``, ``cells`` = the class of each cell in row order, ``sources`` = tile
image ids) and ``_MANIFEST.json`` written last; a finished key is reused.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from shared import store
from shared.dataset_meta import dataset_id
from shared.datasets import Preprocess, decode_image, iter_records
from shared.image_index import build_index, fetch_images

CODE_VERSION = "collages-v1"  # bump when the pixels of a spec change
HEO_TRAIN, HEO_HELDOUT = 1100, 200  # Heo appendix B: 1,300 collages, 1,100 train / 200 held out
SPLITS = ("train", "heldout")
JPEG_QUALITY = 90


@dataclass(frozen=True)
class CollageSpec:
    """Everything that determines a collage set; all of it goes into the content key."""

    dataset: str  # dataset root URI (parquet, webdataset or folder layout)
    c1: int  # first class (label index); its Active map should come to show c2's object
    c2: int  # second class
    images: int = HEO_TRAIN + HEO_HELDOUT  # collages in all, split train:heldout = 1100:200
    tile: int = 64  # side of one cell in pixels (the collage is 2·tile square)
    train_split: str = "train"  # source split of the train collages' tiles
    heldout_split: str = "val"  # source split of the held-out collages' tiles
    seed: int = 0  # tile choice and cell arrangement

    def __post_init__(self) -> None:
        if self.c1 == self.c2 or min(self.c1, self.c2) < 0:
            raise ValueError(f"CollageSpec c1={self.c1}, c2={self.c2}: need two different class indices >= 0")
        if not isinstance(self.images, int) or self.images < 2:
            raise ValueError(f"CollageSpec.images={self.images!r}: need >= 2 (some train, some held out)")
        if not isinstance(self.tile, int) or self.tile < 8:
            raise ValueError(f"CollageSpec.tile={self.tile!r}: must be an integer >= 8 pixels")

    def key(self, dataset_id: str) -> str:
        """Content key of the set (its folder is ``collage_dir(store, key)``)."""
        return store.content_key(self, dataset_id, CODE_VERSION)

    def counts(self) -> dict[str, int]:
        """Train / held-out collages in Heo's 11:2 proportion, at least one of each."""
        heldout = min(max(1, round(self.images * HEO_HELDOUT / (HEO_TRAIN + HEO_HELDOUT))), self.images - 1)
        return {"train": self.images - heldout, "heldout": heldout}


@dataclass(frozen=True)
class CollageResult:
    uri: str  # collage set root (a dataset root with splits "train" and "heldout")
    key: str
    counts: dict[str, int]
    reused: bool


def collage_dir(store_uri: str, key: str) -> str:
    return store.join(store_uri, "collages", key)


def run_collages(spec: CollageSpec, store_uri: str) -> CollageResult:
    """Build (or reuse) the collage set of ``spec`` and commit it with a manifest."""
    key = spec.key(dataset_id(spec.dataset))
    out = collage_dir(store_uri, key)
    done = store.read_manifest(out)
    if done is not None:
        return CollageResult(out, key, dict(done["counts"]), True)
    t0 = time.time()
    counts = spec.counts()
    files = []
    for i, split in enumerate(SPLITS):
        source = spec.train_split if split == "train" else spec.heldout_split
        table = _collage_table(spec, source, counts[split], np.random.default_rng([spec.seed, i]))
        rel = f"parquet/{split}/part-00000.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=128)
        store.write_bytes(store.join(out, rel), sink.getvalue().to_pybytes())
        files.append(rel)
    store.write_manifest(
        out,
        {
            "kind": "collages",
            "key": key,
            "spec": asdict(spec),
            "counts": counts,
            "classes": _class_names(spec),
            "files": files,
            "code_version": CODE_VERSION,
            "seconds": time.time() - t0,
        },
    )
    return CollageResult(out, key, counts, False)


def _class_names(spec: CollageSpec) -> list[str] | None:
    m = store.read_manifest(spec.dataset) or {}
    names = m.get("classes")
    uri = store.join(spec.dataset, "classes.json")
    if names is None and store.exists(uri):
        names = store.read_json(uri)
    return [names[spec.c1], names[spec.c2]] if names else None


def _tile(data: bytes, side: int) -> Image.Image:
    """Shorter side resized to ``side``, centre crop (as the eval transform does)."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
    w, h = im.size
    s = side / min(w, h)
    im = im.resize((max(side, round(w * s)), max(side, round(h * s))), Image.Resampling.BILINEAR)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return im.crop((left, top, left + side, top + side))


def _collage_table(spec: CollageSpec, split: str, n: int, rng: np.random.Generator) -> pa.Table:
    """``n`` collages: two tiles of each class (distinct within a collage), cells shuffled per collage."""
    fs, path = store.resolve(build_index(spec.dataset, split))
    index = pq.read_table(path, filesystem=fs, columns=["image_id", "label"])
    ids = np.asarray(index.column("image_id").to_pylist(), dtype=object)
    labels = index.column("label").to_numpy()
    pools = {}
    for c in (spec.c1, spec.c2):
        pools[c] = np.sort(ids[labels == c].astype(str))
        if len(pools[c]) < 2:
            raise ValueError(
                f"class {c} has {len(pools[c])} image(s) in split {split!r} of {spec.dataset}; a collage needs 2 "
                f"(classes there: {sorted(set(labels.tolist()))[:20]})"
            )
    plan = []
    for _ in range(n):
        cells = rng.permutation([spec.c1, spec.c1, spec.c2, spec.c2]).tolist()
        picks = {c: list(rng.choice(pools[c], size=2, replace=False)) for c in (spec.c1, spec.c2)}
        plan.append((cells, [str(picks[c].pop()) for c in cells]))
    raw = fetch_images(spec.dataset, split, {i for _, srcs in plan for i in srcs})
    rows = []
    side = spec.tile
    for k, (cells, srcs) in enumerate(plan):
        canvas = Image.new("RGB", (2 * side, 2 * side))
        for j, src in enumerate(srcs):
            canvas.paste(_tile(raw[src], side), ((j % 2) * side, (j // 2) * side))
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=JPEG_QUALITY)
        rows.append((f"collage_{split}_{k:06d}", buf.getvalue(), cells, srcs))
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.table(
        {
            "image": pa.array([{"bytes": b, "path": f"{i}.JPEG"} for i, b, _, _ in rows], image_type),
            "label": pa.array([spec.c1] * n, pa.int64()),
            "image_id": pa.array([i for i, _, _, _ in rows], pa.string()),
            "c1": pa.array([spec.c1] * n, pa.int64()),
            "c2": pa.array([spec.c2] * n, pa.int64()),
            "cells": pa.array([c for _, _, c, _ in rows], pa.list_(pa.int64())),
            "sources": pa.array([s for _, _, _, s in rows], pa.list_(pa.string())),
        }
    )


def read_collages(uri: str, split: str, pre: Preprocess) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoded collages of a committed set: ``(pixels [N, 3, crop, crop], c1 [N], c2 [N])``."""
    if store.read_manifest(uri) is None:
        raise FileNotFoundError(
            f"no committed collage set at {uri} (no _MANIFEST.json): run run_collages first"
        )
    if split not in SPLITS:
        raise ValueError(f"unknown collage split {split!r}; valid: {', '.join(SPLITS)}")
    fs, path = store.resolve(store.join(uri, "parquet", split, "part-00000.parquet"))
    table = pq.read_table(path, filesystem=fs, columns=["c1", "c2"])
    pixels = [decode_image(r["image"], pre) for r in iter_records(uri, split, layout="parquet")]
    if any(p is None for p in pixels):
        raise ValueError(f"collage set {uri} split {split!r} holds undecodable images: rebuild it")
    c1 = torch.tensor(table.column("c1").to_pylist(), dtype=torch.long)
    c2 = torch.tensor(table.column("c2").to_pylist(), dtype=torch.long)
    return torch.from_numpy(np.stack(pixels)), c1, c2
