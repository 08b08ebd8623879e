"""Is a committed stage still what its manifest says? Sizes always, checksums once per process.

``store.write_manifest`` records each data file's size and blake2b checksum. Readers here
compare against that record: a derived stage (activation table, top-k, metrics, accuracy, a
trained model) whose files differ counts as not done, and is removed before it is computed
again; a damaged dataset shard raises :class:`CorruptDataset`, which names the file and the
command that re-imports it. No damaged file reaches pyarrow unnamed.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared import store

log = logging.getLogger("vizsweep.integrity")

RECOMPUTE = "removed it: the next launch or resume computes it again"

# (file URI, size, digest) whose checksum matched in this process: read again without hashing
_verified: set[tuple[str, int, str]] = set()


@dataclass(frozen=True)
class Problem:
    """One committed file that does not match its manifest."""

    uri: str
    what: str  # "missing", "1200 bytes, the manifest records 5400", ...

    def __str__(self) -> str:
        return f"{self.uri}: {self.what}"


class CorruptStage(store.StoreError):
    """Committed files differ from their manifest; the message names them and what to do."""

    def __init__(self, message: str, dir_uri: str = "", problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.dir_uri, self.problems = dir_uri, tuple(problems)

    def __reduce__(self) -> tuple:  # survives pickling across Ray workers
        return (type(self), (str(self), self.dir_uri, self.problems))

    @classmethod
    def of(cls, dir_uri: str, problems: list[Problem], advice: str) -> CorruptStage:
        def name(uri: str) -> str:  # the folder is named once; each file by its path inside it
            return uri[len(dir_uri) + 1 :] if uri.startswith(dir_uri + "/") else uri

        shown = "; ".join(f"{name(p.uri)}: {p.what}" for p in problems[:5])
        shown += f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        return cls(f"corrupt files in {dir_uri}: {shown}. {advice}", dir_uri, tuple(problems))


class CorruptDataset(CorruptStage):
    """A dataset shard differs from the dataset's manifest (or cannot be parsed)."""


def recorded(manifest: dict) -> dict[str, dict]:
    """rel path -> ``{"size", "digest"}``; a manifest from before integrity records lists names only."""
    rec = (manifest.get("integrity") or {}).get("files")
    if isinstance(rec, dict):
        return rec
    return {f: {} for f in manifest.get("files", [])}


def check(
    dir_uri: str,
    manifest: dict,
    checksums: bool = False,
    on_file: Callable[[], None] | None = None,
    cached: bool = True,
) -> list[Problem]:
    """The files of a committed stage that differ from its manifest (missing, size, then checksum).

    ``cached=False`` hashes even files that matched earlier in this process (``vizsweep verify``).
    """
    rec = recorded(manifest)
    sizes = store.file_sizes(dir_uri, rec)
    problems = []
    for rel, r in sorted(rec.items()):
        uri = store.join(dir_uri, rel)
        if rel not in sizes:
            problems.append(Problem(uri, "missing"))
        elif "size" in r and sizes[rel] != r["size"]:
            problems.append(Problem(uri, f"{sizes[rel]} bytes, the manifest records {r['size']}"))
        elif checksums and "digest" in r and not _checksum_ok(uri, r, cached):
            problems.append(Problem(uri, "checksum differs from the manifest's (the contents changed)"))
        if on_file is not None:
            on_file()
    return problems


def _checksum_ok(uri: str, r: dict, cached: bool = True) -> bool:
    """Hash the file unless it already matched in this process (then cached)."""
    if cached and _seen(uri, r):
        return True
    ok = store.digest_file(uri) == _pair(r)
    if ok:
        _verified.add((uri, r["size"], r["digest"]))
    return ok


def _pair(r: dict) -> dict:
    return {"size": r["size"], "digest": r["digest"]}


def _seen(uri: str, r: dict) -> bool:
    return (uri, r.get("size"), r.get("digest")) in _verified


def stage_state(dir_uri: str, checksums: bool = False) -> tuple[dict | None, list[Problem]]:
    """(manifest or None when not done, problems); a damaged manifest is a problem, not an exception."""
    try:
        m = store.read_manifest(dir_uri)
    except store.CorruptManifest as e:
        return None, [Problem(store.manifest_uri(dir_uri), f"unreadable manifest ({e.__cause__})")]
    return m, ([] if m is None else check(dir_uri, m, checksums))


def intact_manifest(dir_uri: str) -> dict | None:
    """A derived stage's manifest when its files still match it (sizes), else None: recompute it.

    Pure (nothing is removed here, so ``vizsweep status`` may call it); the job that recomputes
    calls :func:`clear` first.
    """
    m, problems = stage_state(dir_uri)
    if problems:
        log.warning("stage %s is corrupt, it will be recomputed: %s", dir_uri, "; ".join(map(str, problems)))
        return None
    return m


def clear(dir_uri: str) -> None:
    """Remove a stage before computing it again: its manifest first (nothing half-removed looks done)."""
    store.delete(store.manifest_uri(dir_uri))
    store.delete(dir_uri)


def prepare_recompute(dir_uri: str) -> None:
    """Before a job (re)computes a stage: remove what a damaged or outdated commit left there."""
    if store.is_done(dir_uri):
        clear(dir_uri)


def invalidate(dir_uri: str, problems: list[Problem]) -> CorruptStage:
    """Remove a derived stage found damaged while reading it; returns the error to raise."""
    clear(dir_uri)
    return CorruptStage.of(dir_uri, problems, f"Vizsweep {RECOMPUTE}.")


def read_file(dir_uri: str, rel: str, manifest: dict) -> bytes:
    """A committed file of a derived stage, checked (size and checksum) against the manifest."""
    uri = store.join(dir_uri, rel)
    try:
        data = store.read_bytes(uri)
    except store.StoreError:
        raise invalidate(dir_uri, [Problem(uri, "missing")]) from None
    r = recorded(manifest).get(rel, {})
    if "size" in r and (len(data) != r["size"] or ("digest" in r and store.file_record(data) != _pair(r))):
        raise invalidate(dir_uri, [Problem(uri, f"{len(data)} bytes that differ from the manifest's record")])
    if "digest" in r:
        _verified.add((uri, r["size"], r["digest"]))
    return data


def read_parquet(dir_uri: str, rel: str, manifest: dict, **kwargs: Any) -> pa.Table:
    """A whole committed Parquet file of a derived stage, checked; a damaged one is named."""
    data = read_file(dir_uri, rel, manifest)
    try:
        return pq.read_table(pa.BufferReader(data), **kwargs)
    except (pa.ArrowException, OSError) as e:
        problem = Problem(store.join(dir_uri, rel), f"not a readable Parquet file ({e})")
        raise invalidate(dir_uri, [problem]) from e


def iter_parquet(dir_uri: str, rel: str, manifest: dict, **kwargs: Any) -> Iterator[pa.RecordBatch]:
    """Batches of a committed Parquet file: checksummed on its first read in this process, streamed after."""
    uri = store.join(dir_uri, rel)
    r = recorded(manifest).get(rel, {})
    try:
        if "digest" in r and _seen(uri, r):
            fs, path = store.resolve(uri)
            pf = pq.ParquetFile(fs.open_input_file(path))
        else:
            pf = pq.ParquetFile(pa.BufferReader(read_file(dir_uri, rel, manifest)))
        yield from pf.iter_batches(**kwargs)
    except (pa.ArrowException, OSError) as e:
        raise invalidate(dir_uri, [Problem(uri, f"not a readable Parquet file ({e})")]) from e


# --- datasets --------------------------------------------------------------------------


def check_dataset(uri: str, split: str | None = None, checksums: bool = False) -> None:
    """Raise :class:`CorruptDataset` naming each damaged shard (of ``split`` when given) and the fix.

    A dataset without a manifest (not made by vizsweep) has nothing to compare against: no-op.
    """
    root = store.normalize(uri)
    m = _dataset_manifest(root)
    if m is None:
        return
    rec = recorded(m)
    if split is not None:
        rec = {r: v for r, v in rec.items() if f"/{split}/" in f"/{r}"}
    problems = check(root, {"integrity": {"files": rec}}, checksums)
    if problems:
        raise CorruptDataset.of(root, problems, reimport_hint(root, m, problems))


def _dataset_manifest(root: str) -> dict | None:
    try:
        return store.read_manifest(root)
    except store.CorruptManifest as e:
        problem = Problem(store.manifest_uri(root), f"unreadable manifest ({e.__cause__})")
        raise CorruptDataset.of(root, [problem], reimport_hint(root, {}, [problem])) from e


def reimport_hint(root: str, manifest: dict, problems: list[Problem]) -> str:
    """The exact commands that make a damaged dataset whole again."""
    kind = manifest.get("kind", "")
    if kind == "vizsweep-synthetic-imagenet":
        p = manifest.get("params") or {}
        args = " ".join(
            f"--{k.replace('_', '-')} {p[k]}" for k in ("classes", "train_per_class", "val_per_class", "size", "seed")
            if k in p
        )  # fmt: skip
        shard = (
            "" if p.get("shard_size", 512) == 512 else f" (it was made with shard_size {p['shard_size']}: "
        )
        shard += "relaunch the sweep that made it instead)" if shard else ""
        return (
            f"Make it again: delete {store.manifest_uri(root)} (synth then rewrites every shard) and run "
            f"`vizsweep data synth --out {root} {args}`{shard}."
        )
    if kind == "vizsweep-imagenet-import":
        src = _import_source(root) or "SRC"
        files = " ".join(p.uri for p in problems if not p.uri.endswith(store.MANIFEST))
        return (
            f"Re-import it: delete {files or store.manifest_uri(root)} and run "
            f"`vizsweep data import-imagenet {src} {root}` (it rewrites only missing shards)."
        )
    return (
        "Restore the damaged file(s) from their source, then re-import: `vizsweep data import-imagenet SRC "
        f"{root}` for an ILSVRC tree, `vizsweep data synth --out {root}` for the synthetic set."
    )


def _import_source(root: str) -> str | None:
    """The ILSVRC root an import read from (its progress records keep each split's source)."""
    for d in store.list_subdirs(store.join(root, "parquet")):
        prog = store.join(d, "_progress.json")
        if store.exists(prog):
            src = store.read_json(prog).get("src")
            if src:
                return posixpath.dirname(src.rstrip("/"))
    return None


def shard_error(shard: str, exc: BaseException) -> CorruptDataset:
    """The error for a dataset shard pyarrow could not read: the file, the cause, the re-import."""
    root, m = _dataset_root(shard)
    problem = Problem(shard, f"unreadable ({type(exc).__name__}: {exc})")
    return CorruptDataset.of(root, [problem], reimport_hint(root, m, [problem]))


def _dataset_root(shard: str) -> tuple[str, dict]:
    """The nearest folder above ``shard`` with a manifest (the dataset root), and that manifest."""
    d = posixpath.dirname(store.normalize(shard))
    for _ in range(4):
        try:
            m = store.read_manifest(d)
        except store.CorruptManifest:
            m = {}
        if m is not None:
            return d, m
        d = posixpath.dirname(d)
    return posixpath.dirname(shard), {}
