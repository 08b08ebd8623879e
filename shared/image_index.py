"""An index from image_id to where its bytes lie, so a few images never cost a dataset scan.

Top-k grids need a few hundred images out of a split that, at ImageNet scale,
is about 150 GB. The index (``{uri}/_index/{layout}-{split}.parquet``, sorted
by image_id) records each image's shard, row and, per layout, the parquet row
group or the tar member's byte range, so :func:`fetch_images` reads just those
row groups, byte ranges or files.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared import integrity, store
from shared.datasets import (
    DatasetError,
    detect_layout,
    folder_files,
    folder_label,
    folder_label_map,
    image_parts,
    iter_tar_samples,
    layout_root,
    list_shards,
    parquet_columns,
    record_ids,
)

INDEX_DIR = "_index"
INDEX_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("label", pa.int64()),
        ("shard", pa.string()),  # relative to the dataset root
        ("row", pa.int64()),  # row in the parquet shard / sample index in the tar / 0 for a file
        ("row_group", pa.int32()),  # parquet only
        ("offset", pa.int64()),  # tar only: byte offset of the image member's data
        ("size", pa.int64()),  # tar only: byte size of the image member
    ]
)


def index_uri(uri: str, split: str, layout: str) -> str:
    return store.join(uri, INDEX_DIR, f"{layout}-{split}.parquet")


def _relative(root: str, shard: str) -> str:
    if not shard.startswith(root + "/"):
        raise DatasetError(f"shard {shard} lies outside the dataset root {root}")
    return shard[len(root) + 1 :]


def _index_parquet(shard: str, rel: str) -> Iterable[dict[str, Any]]:
    try:
        yield from _index_parquet_rows(shard, rel)
    except (pa.ArrowException, OSError) as e:  # a damaged shard: name it and its re-import
        raise integrity.shard_error(shard, e) from e


def _index_parquet_rows(shard: str, rel: str) -> Iterable[dict[str, Any]]:
    """Ids and labels only: the image column is never read (image.path only when there is no id column)."""
    fs, path = store.resolve(shard)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        cols = parquet_columns(pf.schema_arrow, shard)
        wanted = ["label"] + (["image_id"] if "image_id" in cols else [])
        image_type = pf.schema_arrow.field("image").type
        if (
            "image_id" not in cols
            and pa.types.is_struct(image_type)
            and image_type.get_field_index("path") >= 0
        ):
            wanted.append("image.path")
        row = 0
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg, columns=wanted)
            ids = record_ids(t, shard, row).to_pylist()
            for i, (image_id, label) in enumerate(zip(ids, t.column("label").to_pylist())):
                yield {
                    "image_id": image_id,
                    "label": int(label),
                    "shard": rel,
                    "row": row + i,
                    "row_group": rg,
                }
            row += t.num_rows


def _index_tar(shard: str, rel: str) -> Iterable[dict[str, Any]]:
    for s in iter_tar_samples(shard, read_image=False):
        yield {k: s[k] for k in ("image_id", "label", "row", "offset", "size")} | {"shard": rel}


def build_index(uri: str, split: str, layout: str | None = None) -> str:
    """Write (or reuse) the index of a split and return its URI."""
    root = store.normalize(uri)
    layout = layout or detect_layout(root)
    out = index_uri(root, split, layout)
    if store.exists(out):
        return out
    shards = list_shards(root, split, layout)
    parts: list[pa.Table] = []  # one small table per shard: columnar, so an ImageNet index fits in memory
    if layout == "folder":
        label_map = folder_label_map(root, layout_root(root, layout), split)
        for class_dir in shards:
            label = folder_label(label_map, posixpath.basename(class_dir), class_dir)
            files = folder_files(class_dir)
            rows = [{"image_id": posixpath.basename(f).split(".", 1)[0], "label": label,
                     "shard": _relative(root, f), "row": 0} for f in files]  # fmt: skip
            parts.append(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA))
    else:
        reader = _index_parquet if layout == "parquet" else _index_tar
        for shard in shards:
            rows = list(reader(shard, _relative(root, shard)))
            parts.append(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA))
    table = pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table()
    ids = table.column("image_id")
    counts = pc.value_counts(ids)
    dups = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
    if dups:
        raise DatasetError(
            f"{len(dups)} image id(s) occur more than once in split {split!r} of {root} ({layout}), "
            f"e.g. {sorted(dups)[:5]}: fetching by id would be ambiguous"
        )
    table = table.sort_by("image_id")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=65536)  # sorted + stats: a lookup reads few row groups
    store.write_bytes(out, sink.getvalue().to_pybytes())
    return out


def shard_order(uri: str, split: str, layout: str | None = None) -> pa.Table:
    """The split's index rows in the order the readers yield them: shards as :func:`list_shards`
    sorts them, rows (files, for the folder layout) in shard order."""
    root = store.normalize(uri)
    layout = layout or detect_layout(root)
    fs, path = store.resolve(build_index(root, split, layout))
    table = pq.read_table(path, filesystem=fs)
    position = {_relative(root, s): i for i, s in enumerate(list_shards(root, split, layout))}
    shards = table.column("shard").to_pylist()
    if layout == "folder":  # index rows are files: their shard is the class folder
        shard_of = [position[posixpath.dirname(s)] for s in shards]
        within = pa.array(shards)  # folder_files sorts the file URIs
    else:
        shard_of = [position[s] for s in shards]
        within = table.column("row")
    order = table.append_column("_shard", pa.array(shard_of, pa.int64())).append_column("_within", within)
    return order.sort_by([("_shard", "ascending"), ("_within", "ascending")]).drop_columns(
        ["_shard", "_within"]
    )


def _lookup(root: str, split: str, layout: str, ids: list[str]) -> pa.Table:
    fs, path = store.resolve(build_index(root, split, layout))
    table = pq.read_table(path, filesystem=fs, filters=pc.field("image_id").isin(ids))
    found = set(table.column("image_id").to_pylist())
    missing = [i for i in ids if i not in found]
    if missing:
        sample = pq.ParquetFile(fs.open_input_file(path)).read_row_group(0, columns=["image_id"])
        examples = sample.column("image_id").to_pylist()[:3]
        raise DatasetError(
            f"{len(missing)} of {len(ids)} image id(s) are not in split {split!r} of {root} ({layout}): "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; ids there look like {examples}"
        )
    return table


def fetch_images(
    uri: str, split: str, image_ids: Iterable[str], layout: str | None = None
) -> dict[str, bytes]:
    """The encoded bytes of the given images, reading only their row groups, byte ranges or files."""
    root = store.normalize(uri)
    layout = layout or detect_layout(root)
    ids = list(dict.fromkeys(str(i) for i in image_ids))
    if not ids:
        return {}
    return read_entries(root, layout, _lookup(root, split, layout, ids).to_pylist())


def read_entries(root: str, layout: str, entries: list[dict[str, Any]]) -> dict[str, bytes]:
    """image_id -> encoded bytes of index rows (:data:`INDEX_SCHEMA` dicts): their row groups,
    byte ranges or files only, one open per shard."""
    by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in entries:
        by_shard[h["shard"]].append(h)
    out: dict[str, bytes] = {}
    for rel, members in by_shard.items():
        shard = store.join(root, rel)
        if layout == "folder":
            for e in members:
                out[e["image_id"]] = store.read_bytes(shard)
            continue
        try:
            out.update(_shard_images(shard, layout, members))
        except (pa.ArrowException, OSError) as e:  # a damaged shard: name it and its re-import
            raise integrity.shard_error(shard, e) from e
    return out


def _shard_images(shard: str, layout: str, entries: list[dict[str, Any]]) -> dict[str, bytes]:
    """The images of ``entries`` from one tar or Parquet shard (byte ranges or row groups only)."""
    out: dict[str, bytes] = {}
    fs, path = store.resolve(shard)
    with fs.open_input_file(path) as f:
        if layout == "webdataset":
            for e in entries:
                out[e["image_id"]] = f.read_at(e["size"], e["offset"])
            return out
        pf = pq.ParquetFile(f)
        image_col = "image.bytes" if pa.types.is_struct(pf.schema_arrow.field("image").type) else "image"
        starts = [0]
        for rg in range(pf.num_row_groups):
            starts.append(starts[-1] + pf.metadata.row_group(rg).num_rows)
        groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for e in entries:
            groups[e["row_group"]].append(e)
        for rg, members in groups.items():
            data, _ = image_parts(pf.read_row_group(rg, columns=[image_col]).column("image"))
            for e in members:
                out[e["image_id"]] = data[e["row"] - starts[rg]].as_py()
    return out
