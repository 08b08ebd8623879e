"""Readers for image datasets in three layouts, one record schema for all.

Layouts (under a dataset root, or given directly as the layout folder):
``parquet/{split}/*.parquet`` (the HF imagenet-1k export: ``image`` struct{bytes,
path}, ``label``, optional ``image_id``; flat ``{split}-*.parquet`` files too),
``webdataset/{split}/*.tar`` (``{key}.jpg`` + ``{key}.cls``) and
``folder/{split}/{class_dir}/*.JPEG``. Every reader yields
``{"image_id": str, "label": int, "image": bytes}`` one shard at a time, so an
ImageNet-sized split never sits in memory. Ray is imported only inside
:func:`read_records`, so importing this module stays cheap.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shared import integrity, store

if TYPE_CHECKING:
    import ray.data

LAYOUTS = ("parquet", "webdataset", "folder")
IMAGE_EXTENSIONS = ("jpeg", "jpg", "png", "webp", "bmp")
_TAR_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_BATCH_ROWS = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCHEMA = pa.schema([("image_id", pa.string()), ("label", pa.int64()), ("image", pa.binary())])


class DatasetError(ValueError):
    """A dataset path, split or shard is missing, empty or malformed."""


# --- layout and shards -----------------------------------------------------------


def _visible(uri: str) -> bool:
    name = posixpath.basename(uri)
    return not name.startswith(("_", "."))


def detect_layout(uri: str) -> str:
    """``parquet``, ``webdataset`` or ``folder``: a dataset root (first of those present) or a layout folder."""
    root = store.normalize(uri)
    if not store.exists(root):
        raise DatasetError(f"dataset path {root} does not exist")
    for layout in LAYOUTS:
        if store.is_dir(store.join(root, layout)):
            return layout
    if posixpath.basename(root) in LAYOUTS:
        return posixpath.basename(root)
    for split_dir in filter(_visible, store.list_subdirs(root)):
        files = store.listdir(split_dir)
        if any(f.endswith(".parquet") for f in files):
            return "parquet"
        if any(f.endswith(".tar") for f in files):
            return "webdataset"
        if any(_visible(d) for d in store.list_subdirs(split_dir)):
            return "folder"
    if any(f.endswith(".parquet") for f in store.listdir(root)):
        return "parquet"
    raise DatasetError(
        f"cannot tell the layout of {root}: expected a dataset root with parquet/, webdataset/ or folder/, "
        f"or split folders such as {root}/train/*.parquet, {root}/train/*.tar or {root}/train/<class>/*.JPEG"
    )


def layout_root(uri: str, layout: str) -> str:
    """The folder that holds the split folders: ``{uri}/{layout}`` when present, else ``uri`` itself."""
    root = store.normalize(uri)
    sub = store.join(root, layout)
    return sub if store.is_dir(sub) else root


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    return layout


def list_shards(uri: str, split: str, layout: str | None = None) -> list[str]:
    """Shard URIs of a split, sorted: files for parquet/webdataset, class folders for the folder layout."""
    root = store.normalize(uri)
    if not store.exists(root):
        want = layout or "any of " + "|".join(LAYOUTS)
        raise DatasetError(f"dataset path {root} does not exist (asked for split {split!r}, layout {want})")
    layout = _check_layout(layout or detect_layout(root))
    base = layout_root(root, layout)
    split_dir = store.join(base, split)
    if layout == "parquet":
        shards = [f for f in store.listdir(split_dir) if f.endswith(".parquet")]
        if not shards:  # HF style: data/{split}-00000-of-00042.parquet
            flat = [store.join(base, "data"), base]
            shards = [
                f for d in flat for f in store.listdir(d)
                if f.endswith(".parquet") and posixpath.basename(f).startswith(f"{split}-")
            ]  # fmt: skip
        pattern = f"{split_dir}/*.parquet"
    elif layout == "webdataset":
        shards = [f for f in store.listdir(split_dir) if f.endswith(".tar")]
        pattern = f"{split_dir}/*.tar"
    else:
        shards = [d for d in store.list_subdirs(split_dir) if _visible(d)]
        pattern = f"{split_dir}/<class_dir>/"
    if shards:
        return sorted(shards)
    splits = [posixpath.basename(d) for d in store.list_subdirs(base) if _visible(d)]
    if not store.exists(split_dir):
        raise DatasetError(
            f"split {split!r} not found for the {layout} layout: {split_dir} does not exist "
            f"(splits there: {', '.join(splits) or 'none'})"
        )
    raise DatasetError(f"empty shard set for split {split!r} ({layout} layout): nothing matches {pattern}")


def _stem(path: str) -> str:
    return posixpath.basename(path).split(".", 1)[0]


def fallback_id(shard: str, row: int) -> str:
    """The id of an image that carries none: shard name + row (stable, as shards are immutable)."""
    return f"{_stem(shard)}-{row:07d}"


# --- parquet -----------------------------------------------------------------------


def parquet_columns(schema: pa.Schema, shard: str) -> list[str]:
    """Columns to read from a shard; fails naming the shard when the image or label column is missing."""
    names = schema.names
    missing = [c for c in ("image", "label") if c not in names]
    if missing:
        raise DatasetError(
            f"{shard}: missing column(s) {missing}; an image parquet shard needs 'image' "
            f"(struct<bytes, path> or binary) and 'label' (int), optionally 'image_id'; it has {names}"
        )
    return [c for c in ("image_id", "image", "label") if c in names]


def image_parts(col: pa.ChunkedArray | pa.Array) -> tuple[Any, Any]:
    """(bytes, path-or-None) of an image column that is struct{bytes,path} or plain binary."""
    if pa.types.is_struct(col.type):
        fields = [col.type.field(i).name for i in range(col.type.num_fields)]
        if "bytes" not in fields:
            raise DatasetError(f"image column struct has fields {fields}; expected 'bytes' (and 'path')")
        path = pc.struct_field(col, "path") if "path" in fields else None
        return pc.struct_field(col, "bytes"), path
    return col, None


def record_ids(table: pa.Table | pa.RecordBatch, shard: str | None, start_row: int) -> pa.Array:
    """``image_id`` column, else the stem of ``image.path``, else shard + row (see :func:`fallback_id`)."""
    if "image_id" in table.schema.names:
        return pc.cast(table.column("image_id"), pa.string())
    paths = None
    if "image" in table.schema.names:
        col = table.column("image")  # may hold only the path field (the index reads just that)
        if pa.types.is_struct(col.type) and col.type.get_field_index("path") >= 0:
            paths = pc.struct_field(col, "path")
    path_list = paths.to_pylist() if paths is not None else [None] * table.num_rows
    if shard is None and any(p is None for p in path_list):
        raise DatasetError("rows without image_id or image.path need their shard and row to get an id")
    return pa.array(
        [_stem(p) if p else fallback_id(shard or "", start_row + i) for i, p in enumerate(path_list)],
        pa.string(),
    )


def standardize(table: pa.Table | pa.RecordBatch, shard: str | None = None, start_row: int = 0) -> pa.Table:
    """Parquet rows in any accepted shape -> the common schema (image_id, label, image)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    data, _ = image_parts(table.column("image"))
    return pa.table(
        {
            "image_id": record_ids(table, shard, start_row),
            "label": pc.cast(table.column("label"), pa.int64()),
            "image": pc.cast(data, pa.binary()),
        },
        schema=SCHEMA,
    )


def _iter_parquet(shard: str) -> Iterator[pa.Table]:
    fs, path = store.resolve(shard)
    try:
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            cols = parquet_columns(pf.schema_arrow, shard)
            row = 0
            for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=cols):
                yield standardize(batch, shard, row)
                row += batch.num_rows
    except (pa.ArrowException, OSError) as e:  # a damaged shard: name it and its re-import
        raise integrity.shard_error(shard, e) from e


# --- webdataset --------------------------------------------------------------------


def split_key(name: str) -> tuple[str | None, str | None]:
    """WebDataset key and extension: everything before the first dot of the file name (as Ray does)."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2)) if m else (None, None)


def iter_tar_samples(shard: str, read_image: bool = True) -> Iterator[dict[str, Any]]:
    """Samples of a tar shard: image_id, label, row (sample index), offset/size of the image member.

    Local files are read with seeks (headers only when ``read_image`` is False);
    S3 objects are streamed, as one GET beats one ranged request per member.
    """
    fs, path = store.resolve(shard)
    local = isinstance(fs, pafs.LocalFileSystem)
    f = fs.open_input_file(path) if local else fs.open_input_stream(path)
    with f, tarfile.open(fileobj=f, mode="r:" if local else "r|") as tf:
        current: dict[str, Any] | None = None
        row = -1
        for member in tf:
            key, ext = split_key(member.name)
            if not member.isreg() or key is None:
                continue
            if current is None or key != current["image_id"]:
                if current is not None:
                    yield _finish_sample(current, shard)
                row += 1
                current = {"image_id": key, "row": row, "label": None, "offset": None, "size": None}
            ext = (ext or "").lower()
            if ext in _TAR_IMAGE_EXTENSIONS:
                current["offset"], current["size"] = member.offset_data, member.size
                if read_image:
                    current["image"] = tf.extractfile(member).read()
            elif ext in ("cls", "label"):
                current["label"] = _parse_label(tf.extractfile(member).read(), member.name, shard)
        if current is not None:
            yield _finish_sample(current, shard)


def _parse_label(raw: bytes, name: str, shard: str) -> int:
    try:
        return int(raw.decode().strip())
    except ValueError:
        raise DatasetError(f"{shard}: member {name} should hold an integer label, got {raw[:20]!r}") from None


def _finish_sample(sample: dict[str, Any], shard: str) -> dict[str, Any]:
    if sample["offset"] is None or sample["label"] is None:
        raise DatasetError(
            f"{shard}: sample {sample['image_id']!r} needs an image member "
            f"(.{', .'.join(_TAR_IMAGE_EXTENSIONS)}) and a .cls label member"
        )
    return sample


# --- folder ------------------------------------------------------------------------


def folder_label_map(uri: str, layout_dir: str, split: str) -> dict[str, int]:
    """``label_map.json`` (layout folder, then dataset root), else the split's sorted class folders."""
    candidates = [store.join(layout_dir, "label_map.json"), store.join(uri, "label_map.json")]
    if posixpath.basename(layout_dir) == "folder":
        candidates.append(store.join(posixpath.dirname(layout_dir), "label_map.json"))
    for cand in dict.fromkeys(candidates):
        if store.exists(cand):
            return {str(k): int(v) for k, v in json.loads(store.read_bytes(cand)).items()}
    dirs = [posixpath.basename(d) for d in store.list_subdirs(store.join(layout_dir, split)) if _visible(d)]
    return {d: i for i, d in enumerate(sorted(dirs))}


def folder_files(class_dir: str) -> list[str]:
    """Image files of one class folder, sorted."""
    return [f for f in store.listdir(class_dir) if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]


def folder_label(label_map: dict[str, int], class_name: str, where: str) -> int:
    try:
        return label_map[class_name]
    except KeyError:
        raise DatasetError(
            f"class folder {class_name!r} ({where}) is not in the label map "
            f"(it has {len(label_map)} classes, e.g. {sorted(label_map)[:3]})"
        ) from None


def _iter_folder(class_dir: str, label_map: dict[str, int]) -> Iterator[dict[str, Any]]:
    label = folder_label(label_map, posixpath.basename(class_dir), class_dir)
    for f in folder_files(class_dir):
        yield {"image_id": _stem(f), "label": label, "image": store.read_bytes(f)}


# --- plain-python streaming --------------------------------------------------------


def iter_records(
    uri: str, split: str, layout: str | None = None, shards: Iterable[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Stream ``{"image_id", "label", "image"}`` dicts, one shard at a time."""
    uri = store.normalize(uri)
    layout = _check_layout(layout or detect_layout(uri))
    shard_list = list(shards) if shards is not None else list_shards(uri, split, layout)
    label_map = folder_label_map(uri, layout_root(uri, layout), split) if layout == "folder" else {}
    for shard in shard_list:
        if layout == "parquet":
            for table in _iter_parquet(shard):
                yield from table.to_pylist()
        elif layout == "webdataset":
            for s in iter_tar_samples(shard):
                yield {"image_id": s["image_id"], "label": s["label"], "image": s["image"]}
        else:
            yield from _iter_folder(shard, label_map)


def iter_record_tables(
    uri: str, split: str, layout: str | None = None, shards: Iterable[str] | None = None
) -> Iterator[pa.Table]:
    """Stream the records as small Arrow tables (:data:`SCHEMA`), one shard at a time, in shard order.

    Parquet stays Arrow end to end (no per-row Python objects); the other layouts are batched.
    """
    uri = store.normalize(uri)
    layout = _check_layout(layout or detect_layout(uri))
    shard_list = list(shards) if shards is not None else list_shards(uri, split, layout)
    if layout == "parquet":
        for shard in shard_list:
            yield from _iter_parquet(shard)
        return
    rows: list[dict[str, Any]] = []
    for rec in iter_records(uri, split, layout, shards=shard_list):
        rows.append(rec)
        if len(rows) >= _BATCH_ROWS:
            yield pa.Table.from_pylist(rows, schema=SCHEMA)
            rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=SCHEMA)


# --- Ray Data ----------------------------------------------------------------------


def _folder_to_records(batch: pa.Table, label_map: dict[str, int]) -> pa.Table:
    paths = batch.column("path").to_pylist()
    return pa.table(
        {
            "image_id": pa.array([_stem(p) for p in paths], pa.string()),
            "label": pa.array(
                [folder_label(label_map, posixpath.basename(posixpath.dirname(p)), p) for p in paths],
                pa.int64(),
            ),
            "image": pc.cast(batch.column("bytes"), pa.binary()),
        },
        schema=SCHEMA,
    )


def _read_shards(
    batch: dict[str, np.ndarray], uri: str, split: str, layout: str, s3: Any = None
) -> Iterator[pa.Table]:
    """Reader task: whole shards, yielded as small tables."""
    if s3 is not None:
        store.configure(s3)  # the driver's S3 settings: env set after ray.init never reaches workers
    yield from iter_record_tables(uri, split, layout, shards=[str(s) for s in batch["shard"]])


def read_records(uri: str, split: str, layout: str | None = None) -> ray.data.Dataset:
    """A streaming ``ray.data.Dataset`` with columns image_id (string), label (int64), image (binary).

    Parquet and WebDataset shards are read by one task per shard, from our own shard list:
    Ray 2.60's file readers first list the files again in a task (seconds on a cold worker) and
    pack small shards into a single block, which leaves all but one downstream actor idle.
    """
    import ray.data

    uri = store.normalize(uri)
    layout = _check_layout(layout or detect_layout(uri))
    shards = list_shards(uri, split, layout)
    fs, _ = store.resolve(uri)
    if layout in ("parquet", "webdataset"):
        if layout == "parquet":  # a shard without the needed columns fails here, on the driver
            try:
                schema = pq.read_schema(store.resolve(shards[0])[1], filesystem=fs)
            except (pa.ArrowException, OSError) as e:
                raise integrity.shard_error(shards[0], e) from e
            parquet_columns(schema, shards[0])
        items = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=len(shards))
        return items.map_batches(
            partial(_read_shards, uri=uri, split=split, layout=layout, s3=store.current_s3()),
            batch_size=1,
            batch_format="numpy",
            num_cpus=0.25,  # I/O-bound: leave the cores to decoding and the forward pass
        )
    label_map = folder_label_map(uri, layout_root(uri, layout), split)
    ds = ray.data.read_binary_files(
        [store.resolve(store.join(layout_root(uri, layout), split))[1]],
        include_paths=True,
        filesystem=fs,
        file_extensions=list(IMAGE_EXTENSIONS),
    )
    return ds.map_batches(partial(_folder_to_records, label_map=label_map), batch_format="pyarrow")


# --- decoding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """ImageNet-style eval transform: resize the shorter side, centre crop, normalize (torchvision order)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if not isinstance(self.resize, int) or self.resize < 1:
            raise ValueError(f"Preprocess.resize={self.resize!r}: must be a positive integer")
        if not isinstance(self.crop, int) or not 1 <= self.crop <= self.resize:
            raise ValueError(
                f"Preprocess.crop={self.crop!r}: must be an integer in 1..resize ({self.resize})"
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ValueError(f"Preprocess.{name}={value!r}: needs 3 values (R, G, B)")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocess.std={self.std!r}: every value must be > 0")

    @classmethod
    def imagenet(cls) -> Preprocess:
        return cls(256, 224, IMAGENET_MEAN, IMAGENET_STD)


def decode_image(data: bytes | None, pre: Preprocess) -> np.ndarray | None:
    """float32 [3, crop, crop] normalized pixels, or None when the bytes are not a readable image."""
    from PIL import Image

    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")  # forces a full decode: a truncated file fails here
        return preprocess_image(im, pre)
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)
        return None


def preprocess_image(im: Any, pre: Preprocess) -> np.ndarray:
    """An RGB PIL image as float32 [3, crop, crop] normalized pixels: torchvision's ``Resize(int)``
    (shorter side, bilinear), ``CenterCrop``, ``ToTensor``, ``Normalize``, without importing
    torchvision (its ops import torch._dynamo: seconds in every process)."""
    from PIL import Image

    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(pre.resize * long / short)  # torchvision Resize(int) arithmetic
    nw, nh = (pre.resize, new_long) if w <= h else (new_long, pre.resize)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left = int(round((nw - pre.crop) / 2.0))
    top = int(round((nh - pre.crop) / 2.0))
    arr = np.asarray(im.crop((left, top, left + pre.crop, top + pre.crop)), dtype=np.float32)
    arr = (arr / 255.0 - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def decode_batch(batch: dict[str, np.ndarray], pre: Preprocess) -> dict[str, np.ndarray]:
    """Decode a batch for ``map_batches(batch_format="numpy")``; bad images get ok=False and zero pixels."""
    images = batch["image"]
    n = len(images)
    pixels = np.zeros((n, 3, pre.crop, pre.crop), np.float32)
    ok = np.zeros(n, bool)
    for i, data in enumerate(images):
        arr = decode_image(data, pre)
        if arr is not None:
            pixels[i], ok[i] = arr, True
    return {
        "image_id": np.asarray(batch["image_id"]),
        "label": np.asarray(batch["label"], dtype=np.int64),
        "pixels": pixels,
        "ok": ok,
    }
