"""A deterministic synthetic image-classification dataset that reads like ImageNet.

No real dataset can be downloaded here, yet every reader, job and test must
see what they will see at ImageNet scale: Parquet shards shaped like the
Hugging Face ``imagenet-1k`` export, WebDataset tars and a class-folder tree.
Classes are shape x colour x texture combinations; each image has a random
position, scale, small rotation, a random gradient background and pixel noise.
Every image is a pure function of ``(seed, split, index)``, so two generations
give byte-identical files (with the same Pillow/libjpeg).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import tarfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from shared import store
from shared.progress import Progress, no_progress

GENERATOR_VERSION = 1  # bump when the pixels change: a reused manifest must describe these bytes
SPLITS = ("train", "val")
LAYOUTS = ("parquet", "webdataset", "folder")
JPEG_QUALITY = 90
ROW_GROUP_SIZE = 128  # small row groups: image_index fetches a few images without reading a shard

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 235),
    "yellow": (240, 225, 40),
    "magenta": (215, 45, 215),
    "cyan": (40, 215, 225),
    "orange": (250, 135, 20),
    "white": (245, 245, 245),
}
TEXTURES = ("solid", "stripes", "dots", "checker")
_SPLIT_CODE = {"train": 0, "val": 1}
_SUPERSAMPLE = 4  # shapes are drawn 4x larger and box-filtered: anti-aliased edges
_MAX_ROTATION = 15.0  # degrees; keeps square and diamond, cross and an "x", apart


@lru_cache(maxsize=1)
def class_space() -> tuple[tuple[str, str, str], ...]:
    """All (shape, colour, texture) combinations, in the fixed class order.

    Within a texture, class i is (SHAPES[i % 7], COLOURS[i % 8]): as 7 and 8
    are coprime the 56 pairs are all visited, and any two of the first 16
    classes differ in shape or colour (most in both). Textures come later.
    """
    colours = list(COLOURS)
    n_pairs = len(SHAPES) * len(colours)
    return tuple(
        (SHAPES[i % len(SHAPES)], colours[i % len(colours)], texture)
        for texture in TEXTURES
        for i in range(n_pairs)
    )


def class_names(classes: int = 16) -> list[str]:
    """Names like ``red_circle_solid``; index = label."""
    space = class_space()
    if not 1 <= classes <= len(space):
        raise ValueError(
            f"classes={classes}: must be between 1 and {len(space)} (shapes x colours x textures)"
        )
    return [f"{colour}_{shape}_{texture}" for shape, colour, texture in space[:classes]]


def class_dir(label: int) -> str:
    """A wnid-like folder name for a label (``n00000001`` for label 1)."""
    return f"n{label:08d}"


def image_id(split: str, index: int) -> str:
    return f"{split}-{index:07d}"


# --- rendering -------------------------------------------------------------------


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a unit shape scaled by ``r``, rotated and centred."""
    if shape == "square":
        pts = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a) + 0.15) for a in np.radians([-90.0, 30.0, 150.0])]
    elif shape == "cross":
        w = 0.3
        pts = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    elif shape == "diamond":
        pts = [(0.0, -1.0), (0.65, 0.0), (0.0, 1.0), (-0.65, 0.0)]
    elif shape == "star":
        pts = []
        for k in range(10):
            a = math.radians(-90 + 36 * k)
            rad = 1.0 if k % 2 == 0 else 0.45
            pts.append((rad * math.cos(a), rad * math.sin(a) + 0.05))
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the shape on a ``size`` square."""
    k = _SUPERSAMPLE
    img = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(img)
    X, Y, R = cx * k, cy * k, r * k
    if shape in ("circle", "ring"):
        draw.ellipse((X - R, Y - R, X + R, Y + R), fill=255)
        if shape == "ring":
            ri = 0.55 * R
            draw.ellipse((X - ri, Y - ri, X + ri, Y + ri), fill=0)
    else:
        draw.polygon(_shape_points(shape, X, Y, R, angle), fill=255)
    small = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _texture(texture: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """1 where the pattern darkens the shape, 0 elsewhere (moves and turns with the shape)."""
    if texture == "solid":
        return np.zeros((size, size), np.float32)
    yy, xx = _grid(size)
    yy, xx = yy + 0.5, xx + 0.5
    c, s = math.cos(angle), math.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    period = max(4.0, 0.5 * r)
    if texture == "stripes":
        return (np.floor(u / (period / 2)) % 2).astype(np.float32)
    if texture == "checker":
        return ((np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2).astype(np.float32)
    if texture == "dots":
        fu = (u / period) % 1.0 - 0.5
        fv = (v / period) % 1.0 - 0.5
        return (np.hypot(fu, fv) < 0.3).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}; valid: {', '.join(TEXTURES)}")


@lru_cache(maxsize=4)
def _grid(size: int) -> np.ndarray:
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    grid.flags.writeable = False
    return grid


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour linear gradient, dark or light, in float RGB 0..255."""
    dark = rng.random() < 0.5
    ends = []
    for _ in range(2):
        hue = rng.random()
        sat = rng.uniform(0.0, 0.45)
        val = rng.uniform(0.05, 0.35) if dark else rng.uniform(0.45, 0.7)
        ends.append(np.array(_hsv_to_rgb(hue, sat, val), np.float32) * 255.0)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = _grid(size) / max(size - 1, 1)
    t = (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta)
    t = np.clip(t + 0.5, 0.0, 1.0)[..., None]
    return ends[0] * (1 - t) + ends[1] * t


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


def render(
    label: int, seed: int, split: str, index: int, size: int = 64, classes: int | None = None
) -> bytes:
    """The JPEG bytes of one image: a pure function of its arguments."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split {split!r}: valid splits are {', '.join(SPLITS)}")
    space = class_space()
    if not 0 <= label < (classes or len(space)):
        raise ValueError(f"label {label} out of range 0..{(classes or len(space)) - 1}")
    shape, colour, texture = space[label]
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], 1, index])
    img = _background(rng, size)
    r = rng.uniform(0.35, 0.8) * size / 2  # the shape spans 35-80 % of the image
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    angle = math.radians(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
    base = np.clip(np.array(COLOURS[colour], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32), 0, 255)
    pattern = _texture(texture, size, cx, cy, r, angle)[..., None]
    fg = base * (1.0 - 0.65 * pattern)
    alpha = _mask(shape, size, cx, cy, r, angle)[..., None]
    img = img * (1 - alpha) + fg * alpha
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(3.0, 10.0))
    arr = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    return buf.getvalue()


def split_labels(classes: int, per_class: int, seed: int, split: str) -> np.ndarray:
    """Labels of a split in image order: balanced, shuffled so every shard mixes classes."""
    labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    return np.random.default_rng([seed, _SPLIT_CODE[split], 0]).permutation(labels)


# --- writers ---------------------------------------------------------------------


def parquet_schema(names: list[str]):
    """The shard schema of the HF imagenet-1k Parquet export (synth and import-imagenet write it)."""
    import pyarrow as pa

    hf_features = {
        "info": {
            "features": {
                "image": {"_type": "Image"},
                "label": {"names": names, "_type": "ClassLabel"},
                "image_id": {"dtype": "string", "_type": "Value"},
            }
        }
    }
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.schema(
        [("image", image_type), ("label", pa.int64()), ("image_id", pa.string())],
        metadata={"huggingface": json.dumps(hf_features)},
    )


def _parquet_shard(rows: list[tuple[str, int, bytes]], names: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema(names)
    image_type = schema.field("image").type
    table = pa.table(
        {
            "image": pa.array([{"bytes": b, "path": f"{i}.JPEG"} for i, _, b in rows], image_type),
            "label": pa.array([lab for _, lab, _ in rows], pa.int64()),
            "image_id": pa.array([i for i, _, _ in rows], pa.string()),
        },
        schema=schema,
    )
    sink = pa.BufferOutputStream()
    # no min/max statistics on the JPEG bytes: they would bloat every row group's footer entry
    pq.write_table(table, sink, row_group_size=ROW_GROUP_SIZE, write_statistics=["label", "image_id"])
    return sink.getvalue().to_pybytes()


def _tar_shard(rows: list[tuple[str, int, bytes]]) -> bytes:
    """WebDataset tar: ``{key}.jpg`` then ``{key}.cls``, fixed metadata so bytes are reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for key, label, data in rows:
            for name, payload in ((f"{key}.jpg", data), (f"{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _repeat(*values: Any) -> list[itertools.repeat]:
    return [itertools.repeat(v) for v in values]


def _params(
    classes: int, train_per_class: int, val_per_class: int, size: int, seed: int, shard_size: int
) -> dict:
    for name, value, low in (
        ("train_per_class", train_per_class, 1),
        ("val_per_class", val_per_class, 1),
        ("size", size, 16),
        ("shard_size", shard_size, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be a non-negative integer")
    class_names(classes)  # validates the range
    return {
        "classes": classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "size": size,
        "seed": seed,
        "shard_size": shard_size,
        "generator_version": GENERATOR_VERSION,
    }


def generate(
    out_uri: str,
    classes: int = 16,
    train_per_class: int = 300,
    val_per_class: int = 50,
    size: int = 64,
    seed: int = 0,
    shard_size: int = 512,
    progress: Progress = no_progress,
) -> dict:
    """Write the dataset in all three layouts under ``out_uri`` and return its manifest.

    A finished dataset with the same parameters is reused as is; one with other
    parameters is an error (we never overwrite a dataset someone may be using).
    Without a manifest, the layout folders and ``_index`` under ``out_uri`` are
    a crashed run's leftovers and are deleted first, so no stale shard survives.
    """
    params = _params(classes, train_per_class, val_per_class, size, seed, shard_size)
    root = store.normalize(out_uri)
    existing = store.read_manifest(root)
    if existing is not None:
        if existing.get("params") == params:
            return existing
        old = existing.get("params") or {}
        diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        raise ValueError(
            f"{root} already holds a dataset with other parameters (existing, requested): {diff}; "
            "generate into another folder or delete this one"
        )
    # no manifest: anything here is a crashed run's leftovers; clear them so no stale shard survives
    for sub in (*LAYOUTS, "_index"):
        store.delete(store.join(root, sub))

    names = class_names(classes)
    label_map = {class_dir(i): i for i in range(classes)}
    per_class = {"train": train_per_class, "val": val_per_class}
    total = classes * (train_per_class + val_per_class)
    done = 0
    splits: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:  # rendering, and the folder layout's many small writes
        for split in SPLITS:
            labels = split_labels(classes, per_class[split], seed, split)
            n_shards = math.ceil(len(labels) / shard_size)
            for s in range(n_shards):
                idx = range(s * shard_size, min((s + 1) * shard_size, len(labels)))
                # numpy and PIL release the GIL in their inner loops: threads render about 2x faster on 2 cores
                shard_labels = [int(labels[i]) for i in idx]
                images = pool.map(render, shard_labels, *_repeat(seed, split), idx, *_repeat(size, classes))
                rows = [(image_id(split, i), lab, data) for i, lab, data in zip(idx, shard_labels, images)]
                store.write_bytes(
                    store.join(root, "parquet", split, f"part-{s:05d}.parquet"), _parquet_shard(rows, names)
                )
                store.write_bytes(
                    store.join(root, "webdataset", split, f"shard-{s:05d}.tar"), _tar_shard(rows)
                )
                writes = [
                    pool.submit(
                        store.write_bytes,
                        store.join(root, "folder", split, class_dir(lab), f"{key}.JPEG"),
                        data,
                    )
                    for key, lab, data in rows
                ]
                for w in writes:
                    w.result()
                done += len(rows)
                progress(done, total, stage="synth", split=split, shard=s)
            splits[split] = {"images": len(labels), "shards": n_shards, "per_class": per_class[split]}

    store.write_json(store.join(root, "classes.json"), names)
    store.write_json(store.join(root, "label_map.json"), label_map)
    return store.write_manifest(
        root,
        {
            "kind": "vizsweep-synthetic-imagenet",
            "params": params,
            "splits": splits,
            "layouts": {
                "parquet": "parquet/{split}/part-NNNNN.parquet",
                "webdataset": "webdataset/{split}/shard-NNNNN.tar",
                "folder": "folder/{split}/{class_dir}/{image_id}.JPEG",
            },
            "size": size,
            "seed": seed,
            "classes": names,
            "num_classes": classes,
            "jpeg_quality": JPEG_QUALITY,
        },
    )
