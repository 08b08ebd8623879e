"""Convert an ILSVRC-2012 tree into the Parquet shard layout our readers expect.

Input (a local path, ``file://`` or ``s3://``)::

    SRC/train/<wnid>/*.JPEG      class folders (also the Kaggle ILSVRC/Data/CLS-LOC layout)
    SRC/val/<wnid>/*.JPEG        class folders, or
    SRC/val/*.JPEG               flat, with labels from ``val_labels`` (see :func:`read_val_labels`)

Output, mirroring what :mod:`shared.synth` writes for its Parquet layout::

    DEST/parquet/{split}/part-NNNNN.parquet   image struct{bytes, path}, label int64, image_id string
    DEST/parquet/{split}/_progress.json       the split's plan and the shards written so far
    DEST/classes.json, DEST/label_map.json    wnids in label order, wnid -> label
    DEST/_MANIFEST.json                       written last: the dataset is complete

Labels are the sorted wnids numbered 0..N-1 (torchvision ``ImageFolder`` order, which torchvision's
pretrained weights use). Image bytes are copied as they are. Images are ordered by a hash of their
path, so every shard mixes classes (readers that take "the first n images" get a fair sample) and the
order never depends on a library version. A split's shards are a pure function of its file list and
the shard size; each is written atomically and recorded in ``_progress.json``, so an interrupted
import run again writes only the shards that are missing.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shared import store
from shared.datasets import IMAGE_EXTENSIONS, DatasetError
from shared.progress import Progress, no_progress
from shared.synth import ROW_GROUP_SIZE

IMPORTER_VERSION = 1  # bump when the shard bytes change: a plan made by another version is not resumed
KIND = "vizsweep-imagenet-import"
SPLITS = ("train", "val")
PROGRESS = "_progress.json"
_WNID = re.compile(r"^n\d{8}$")
_READ_THREADS = 8  # file reads are I/O bound (S3 or a network disk): threads overlap them
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@dataclass(frozen=True, slots=True)  # slots: ImageNet's train split is 1.28 million of these
class Entry:
    """One source image: path relative to the split folder, size, id (file stem) and class."""

    rel: str
    size: int
    image_id: str
    wnid: str


@dataclass(frozen=True)
class Plan:
    """A split's images in shard order, chunked; ``key`` pins everything that decides the shard bytes."""

    split: str
    src: str
    entries: tuple[Entry, ...]
    shard_size: int
    key: str

    @property
    def shards(self) -> int:
        return -(-len(self.entries) // self.shard_size)

    def chunk(self, i: int) -> tuple[Entry, ...]:
        return self.entries[i * self.shard_size : (i + 1) * self.shard_size]


@dataclass(frozen=True)
class ImportResult:
    uri: str  # the dataset root
    manifest: dict
    written: dict[str, int]  # shards this run wrote, per split
    skipped: dict[str, int]  # shards already there from an earlier run

    def summary(self) -> dict[str, Any]:
        splits = self.manifest["splits"]
        return {
            "dataset": self.uri,
            "classes": self.manifest["num_classes"],
            "splits": {
                s: {"images": splits[s]["images"], "shards": splits[s]["shards"],
                    "written": self.written[s], "skipped": self.skipped[s]}
                for s in self.written
            },
        }  # fmt: skip


# --- listing the source --------------------------------------------------------------------


def _uri(uri: str, what: str) -> str:
    try:
        return store.normalize(uri)
    except store.StoreError as e:
        raise DatasetError(f"{what}: {e}") from None


def _stem(name: str) -> str:
    return posixpath.basename(name).split(".", 1)[0]


def list_images(dir_uri: str) -> list[tuple[str, int]]:
    """(path relative to ``dir_uri``, size) of every image file below it, sorted; hidden files skipped."""
    fs, path = store.resolve(dir_uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = posixpath.relpath(info.path, path)
        hidden = any(part.startswith((".", "_")) for part in rel.split("/"))  # ._x.JPEG: macOS metadata
        if not hidden and rel.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
            out.append((rel, int(info.size)))
    return sorted(out)


def class_folders(split_uri: str) -> list[str]:
    """Names of the visible sub-folders of a split folder, sorted."""
    names = (posixpath.basename(d) for d in store.list_subdirs(split_uri))
    return sorted(n for n in names if not n.startswith((".", "_")))


# --- validation labels ---------------------------------------------------------------------


def read_synsets(uri: str) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the 1000 leaf synsets, from the devkit's ``data/meta.mat``."""
    import scipy.io

    try:
        meta = scipy.io.loadmat(io.BytesIO(store.read_bytes(uri)), squeeze_me=True)["synsets"]
        ids, wnids, children = meta["ILSVRC2012_ID"], meta["WNID"], meta["num_children"]
        return {int(i): str(w) for i, w, c in zip(ids, wnids, children) if int(c) == 0}
    except (store.StoreError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DatasetError(
            f"cannot read synsets from {uri} ({type(e).__name__}: {e}); --synsets must be the devkit's "
            "data/meta.mat (ILSVRC2012_devkit_t12), a struct array 'synsets' with ILSVRC2012_ID, WNID, num_children"
        ) from None


def read_val_labels(labels_uri: str, val_files: list[str], synsets_uri: str | None = None) -> dict[str, str]:
    """image_id -> wnid for flat validation files, from either accepted label file form.

    - ``filename wnid`` per line (space, tab or comma separated; the name with or without extension;
      extra columns and one header line are ignored, so Kaggle's ``LOC_val_solution.csv`` works too);
    - the devkit's ``ILSVRC2012_validation_ground_truth.txt``: one 1-based ILSVRC2012_ID per line, line k
      labelling the k-th file in name order. IDs are not wnid order: they map through ``meta.mat``
      (``synsets_uri``, else the ``meta.mat`` beside the label file).
    """
    try:
        text = store.read_bytes(labels_uri).decode("utf-8")
    except (store.StoreError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read validation labels {labels_uri}: {e}") from None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DatasetError(f"validation label file {labels_uri} is empty")
    if all(ln.isdigit() for ln in lines):
        return _ground_truth_labels(labels_uri, lines, val_files, synsets_uri)
    stems = {_stem(f) for f in val_files}
    mapping: dict[str, str] = {}
    for n, line in enumerate(lines):
        parts = re.split(r"[,\s]+", line)
        if len(parts) < 2:
            raise DatasetError(
                f"{labels_uri}, line {n + 1}: {line!r} has one field; expected 'filename wnid' "
                "(or a file with one ILSVRC2012_ID per line)"
            )
        if n == 0 and _stem(parts[0]) not in stems and not _WNID.match(parts[1]):
            continue  # a header such as "ImageId,PredictionString"
        mapping[_stem(parts[0])] = parts[1]
    return mapping


def _ground_truth_labels(
    labels_uri: str, lines: list[str], val_files: list[str], synsets_uri: str | None
) -> dict[str, str]:
    if synsets_uri is None:
        beside = posixpath.join(posixpath.dirname(labels_uri), "meta.mat")
        if not store.exists(beside):
            raise DatasetError(
                f"{labels_uri} holds ILSVRC2012_IDs, which map to wnids only through the devkit's meta.mat: "
                f"pass --synsets .../ILSVRC2012_devkit_t12/data/meta.mat (none found at {beside})"
            )
        synsets_uri = beside
    id_to_wnid = read_synsets(synsets_uri)
    files = sorted(val_files, key=posixpath.basename)
    if len(lines) != len(files):
        raise DatasetError(
            f"{labels_uri} has {len(lines)} labels but the val folder has {len(files)} images; the "
            "ground-truth file labels every validation image in file-name order, so the counts must match"
        )
    out = {}
    for f, line in zip(files, lines):
        wnid = id_to_wnid.get(int(line))
        if wnid is None:
            raise DatasetError(
                f"{labels_uri}: ILSVRC2012_ID {line} (for {f}) is not a leaf synset in {synsets_uri}"
            )
        out[_stem(f)] = wnid
    return out


# --- plans ---------------------------------------------------------------------------------


def _order_key(rel: str) -> bytes:
    return hashlib.blake2b(rel.encode(), digest_size=8, person=b"vizsweep-in").digest()


def _plan(split: str, src: str, entries: list[Entry], label_of: dict[str, int], shard_size: int) -> Plan:
    if not entries:
        raise DatasetError(f"empty split {split!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}")
    seen: dict[str, str] = {}
    for e in entries:
        if e.image_id in seen:
            raise DatasetError(
                f"split {split!r}: image id {e.image_id!r} (the file stem) is shared by {seen[e.image_id]} "
                f"and {e.rel}; ids must be unique within a split"
            )
        seen[e.image_id] = e.rel
        if e.wnid not in label_of:
            raise DatasetError(
                f"split {split!r}: {e.rel} has class {e.wnid!r}, which is not among the {len(label_of)} "
                f"classes (from {'train class folders' if split == 'val' else 'the class folders'}, "
                f"e.g. {', '.join(list(label_of)[:3])})"
            )
    ordered = tuple(sorted(entries, key=lambda e: _order_key(e.rel)))
    h = hashlib.sha256(f"{IMPORTER_VERSION}\n{shard_size}\n".encode())
    for e in ordered:
        h.update(f"{e.rel}\t{e.size}\t{label_of[e.wnid]}\n".encode())
    return Plan(split, src, ordered, shard_size, h.hexdigest()[:16])


def _train_entries(split_uri: str) -> list[Entry]:
    files = list_images(split_uri)
    flat = [rel for rel, _ in files if "/" not in rel]
    if flat:
        raise DatasetError(
            f"{split_uri} has images outside class folders (e.g. {flat[0]}); training images must lie "
            f"in {split_uri}/<wnid>/"
        )
    return [Entry(rel, size, _stem(rel), sys.intern(rel.split("/", 1)[0])) for rel, size in files]


def _val_entries(split_uri: str, val_labels: str | None, synsets: str | None) -> list[Entry]:
    files = list_images(split_uri)
    nested = [rel for rel, _ in files if "/" in rel]
    flat = [rel for rel, _ in files if "/" not in rel]
    if nested and flat:
        raise DatasetError(
            f"{split_uri} mixes class folders ({nested[0]}) and flat images ({flat[0]}); use one form"
        )
    if nested:
        if val_labels is not None:
            raise DatasetError(
                f"{split_uri} is in class folders, which already give the labels; drop --val-labels"
            )
        return [Entry(rel, size, _stem(rel), rel.split("/", 1)[0]) for rel, size in files]
    if flat and val_labels is None:
        raise DatasetError(
            f"{split_uri} holds {len(flat)} images without class folders, so their labels must come from "
            "--val-labels: a 'filename wnid' file, or the devkit's ILSVRC2012_validation_ground_truth.txt "
            "(with --synsets data/meta.mat)"
        )
    if not flat:
        return []
    labels = read_val_labels(_uri(val_labels, "--val-labels"), flat, synsets and _uri(synsets, "--synsets"))
    missing = [rel for rel in flat if _stem(rel) not in labels]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(flat)} validation images have no label in {val_labels} "
            f"(e.g. {', '.join(missing[:3])})"
        )
    return [Entry(rel, size, _stem(rel), labels[_stem(rel)]) for rel, size in files]


def _classes(src: str, dest: str, entries: dict[str, list[Entry]]) -> list[str]:
    """Sorted wnids: SRC/train's class folders when it has them, else those of an earlier import into
    DEST (a val-only source added to an imported train split), else the classes the val images name."""
    train = store.join(src, "train")
    folders = class_folders(train) if store.is_dir(train) else []
    if folders:
        if "train" in entries:
            with_images = {e.wnid for e in entries["train"]}
            empty = [w for w in folders if w not in with_images]
            if empty:
                raise DatasetError(
                    f"class folder(s) without images in {train}: {', '.join(empty[:5])}; an incomplete "
                    "extraction? (every class folder must hold images)"
                )
        return folders
    earlier = store.join(dest, "classes.json")
    if store.exists(earlier):
        return list(store.read_json(earlier))
    return sorted({e.wnid for es in entries.values() for e in es})


# --- writing -------------------------------------------------------------------------------


def _shard_bytes(rows: list[tuple[Entry, int, bytes]], classes: list[str]) -> bytes:
    """One Parquet shard shaped like synth's (and the HF imagenet-1k export)."""
    from shared.synth import parquet_schema

    schema = parquet_schema(classes)
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": b, "path": posixpath.basename(e.rel)} for e, _, b in rows], _IMAGE_TYPE
            ),
            "label": pa.array([lab for _, lab, _ in rows], pa.int64()),
            "image_id": pa.array([e.image_id for e, _, _ in rows], pa.string()),
        },
        schema=schema,
    )
    sink = pa.BufferOutputStream()
    # no min/max statistics on the JPEG bytes: they would bloat every row group's footer entry
    pq.write_table(table, sink, row_group_size=ROW_GROUP_SIZE, write_statistics=["label", "image_id"])
    return sink.getvalue().to_pybytes()


def _existing_progress(out_dir: str, plan: Plan) -> dict | None:
    """The split's progress record if an earlier run of the same plan left one.

    None when there is none, or when it belongs to an unfinished run of another plan (which is then
    redone). Raises, before anything is written, when the folder holds a finished split of another
    plan or shards this importer did not write.
    """
    prog_uri = store.join(out_dir, PROGRESS)
    prog = store.read_json(prog_uri) if store.exists(prog_uri) else None
    if prog is None:
        if any(f.endswith(".parquet") for f in store.listdir(out_dir)):
            raise DatasetError(
                f"{out_dir} holds Parquet shards without {PROGRESS}: not written by this importer; "
                "import into another folder"
            )
        return None
    if prog.get("plan_key") == plan.key:
        return prog
    if len(prog.get("done", [])) == prog.get("shards"):
        raise DatasetError(
            f"{out_dir} already holds a complete {plan.split!r} split made from other files or with "
            f"another shard size (plan {prog.get('plan_key')}, now {plan.key}); import into another "
            f"folder or delete {out_dir}"
        )
    return None


def _split_progress(out_dir: str, plan: Plan) -> dict:
    """The split's progress record, after clearing what another plan's or a killed run left behind."""
    prog = _existing_progress(out_dir, plan)
    if prog is None:
        store.delete(out_dir)  # nothing, or an unfinished import of another plan: start the split over
        prog = {"plan_key": plan.key, "src": plan.src, "images": len(plan.entries),
                "shards": plan.shards, "shard_size": plan.shard_size, "done": []}  # fmt: skip
        store.write_json(store.join(out_dir, PROGRESS), prog)
    for f in store.listdir(out_dir):
        if ".tmp-" in posixpath.basename(f):  # a local writer killed before its rename
            store.delete(f)
    return prog


def _write_split(
    dest: str, plan: Plan, label_of: dict[str, int], classes: list[str], pool: ThreadPoolExecutor,
    progress: Progress,
) -> tuple[int, int]:  # fmt: skip
    out_dir = store.join(dest, "parquet", plan.split)
    prog = _split_progress(out_dir, plan)
    present = {posixpath.basename(f) for f in store.listdir(out_dir)}
    done = set(prog["done"])
    written = skipped = images = 0
    progress(0, len(plan.entries), phase=plan.split)
    for i in range(plan.shards):
        name = f"part-{i:05d}.parquet"
        chunk = plan.chunk(i)
        if name in done and name in present:
            skipped += 1
        else:
            data = pool.map(store.read_bytes, [store.join(plan.src, e.rel) for e in chunk])
            rows = [(e, label_of[e.wnid], b) for e, b in zip(chunk, data)]
            store.write_bytes(store.join(out_dir, name), _shard_bytes(rows, classes))
            done.add(name)
            store.write_json(store.join(out_dir, PROGRESS), {**prog, "done": sorted(done)})
            written += 1
        images += len(chunk)
        progress(images, len(plan.entries), phase=plan.split, shard=f"{i + 1}/{plan.shards}")
    return written, skipped


def _complete_splits(dest: str) -> dict[str, dict]:
    """Every split under DEST/parquet whose progress record has all its shards."""
    out = {}
    for d in store.list_subdirs(store.join(dest, "parquet")):
        prog_uri = store.join(d, PROGRESS)
        if store.exists(prog_uri):
            p = store.read_json(prog_uri)
            if len(p["done"]) == p["shards"]:
                keys = ("images", "shards", "shard_size", "plan_key")
                out[posixpath.basename(d)] = {k: p[k] for k in keys}
    return out


def _check_dest(dest: str, classes: list[str]) -> dict | None:
    """DEST's manifest (None when absent); fails when DEST holds another dataset or other classes."""
    m = store.read_manifest(dest)
    if m is not None and m.get("kind") != KIND:
        raise DatasetError(
            f"{dest} holds another dataset (kind {m.get('kind')!r}); import into another folder"
        )
    lm_uri = store.join(dest, "label_map.json")
    if store.exists(lm_uri):
        old = store.read_json(lm_uri)
        if old != {w: i for i, w in enumerate(classes)}:
            raise DatasetError(
                f"{dest} was imported with {len(old)} other classes (label_map.json); the source now has "
                f"{len(classes)}: import into another folder, or from the same ILSVRC tree"
            )
    return m


def _reusable(dest: str, m: dict | None, plans: dict[str, Plan]) -> bool:
    if m is None:
        return False
    for split, plan in plans.items():
        if m.get("splits", {}).get(split, {}).get("plan_key") != plan.key:
            return False
        present = {posixpath.basename(f) for f in store.listdir(store.join(dest, "parquet", split))}
        if any(f"part-{i:05d}.parquet" not in present for i in range(plan.shards)):
            return False
    return True


def import_imagenet(
    src: str,
    dest: str,
    split: str = "both",
    val_labels: str | None = None,
    synsets: str | None = None,
    shard_size: int = 1000,
    progress: Progress = no_progress,
) -> ImportResult:
    """Import ``split`` (train, val or both) of the ILSVRC tree at ``src`` into ``dest``.

    A dataset already imported from the same files is reused as is; an interrupted import resumes.
    Errors (missing or empty source, unlabelled val images, a DEST holding other data) are
    :class:`DatasetError` naming the path and the fix.
    """
    splits = {"both": SPLITS, "train": ("train",), "val": ("val",)}.get(split)
    if splits is None:
        raise DatasetError(f"split {split!r}: valid choices are train, val, both")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise DatasetError(f"shard_size={shard_size!r}: must be an integer >= 1")
    src_root, dest_root = _uri(src, "SRC"), _uri(dest, "DEST")
    if not store.is_dir(src_root):
        raise DatasetError(f"ImageNet source {src_root} does not exist or is not a folder")
    readers: dict[str, Callable[[str], list[Entry]]] = {
        "train": _train_entries,
        "val": lambda uri: _val_entries(uri, val_labels, synsets),
    }
    entries: dict[str, list[Entry]] = {}
    for s in splits:
        split_uri = store.join(src_root, s)
        if not store.is_dir(split_uri):
            there = ", ".join(class_folders(src_root)) or "nothing"
            raise DatasetError(f"split {s!r} not found: {split_uri} does not exist ({src_root} has: {there})")
        entries[s] = readers[s](split_uri)
    classes = _classes(src_root, dest_root, entries)
    label_of = {w: i for i, w in enumerate(classes)}
    plans = {s: _plan(s, store.join(src_root, s), entries[s], label_of, shard_size) for s in splits}
    manifest = _check_dest(dest_root, classes)
    for s, plan in plans.items():
        _existing_progress(store.join(dest_root, "parquet", s), plan)  # refuse before touching anything
    if _reusable(dest_root, manifest, plans):
        return ImportResult(
            dest_root, manifest, {s: 0 for s in splits}, {s: p.shards for s, p in plans.items()}
        )

    store.delete(store.manifest_uri(dest_root))  # the dataset is incomplete until the manifest is back
    store.write_json(store.join(dest_root, "classes.json"), classes)
    store.write_json(store.join(dest_root, "label_map.json"), label_of)
    written, skipped = {}, {}
    with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
        for s, plan in plans.items():
            written[s], skipped[s] = _write_split(dest_root, plan, label_of, classes, pool, progress)
    manifest = store.write_manifest(
        dest_root,
        {
            "kind": KIND,
            "importer_version": IMPORTER_VERSION,
            "splits": _complete_splits(dest_root),
            "layouts": {"parquet": "parquet/{split}/part-NNNNN.parquet"},
            "classes": classes,
            "num_classes": len(classes),
            "labels": "sorted wnids (torchvision ImageFolder order)",
        },
    )
    return ImportResult(dest_root, manifest, written, skipped)
