"""One way to read and write the store, whether it is a local folder or S3.

URIs: bare paths and ``file://`` are local; ``s3://bucket/key`` goes through
pyarrow's S3 filesystem. The S3 endpoint and credentials come from the
environment (``AWS_ENDPOINT_URL`` or ``VIZSWEEP_S3_ENDPOINT``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) or from an
explicit :class:`S3Config`, never from the URI, so that no credential ends up
in a log line or an MLflow param.

A stage is *done* when its ``_MANIFEST.json`` exists. Manifests are written
last and atomically, so nothing half-written can look done. Each manifest also
records the size and a blake2b checksum of every data file of its stage (its
``files``, or for a dataset its Parquet and tar shards), so a reader can tell a
damaged file from a good one (``shared.integrity``).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

MANIFEST = "_MANIFEST.json"


class StoreError(RuntimeError):
    """A store URI is malformed or a path the job needs is missing."""


class CorruptManifest(StoreError):
    """A ``_MANIFEST.json`` that is not readable JSON (a damaged file, not a missing one)."""


@dataclass(frozen=True)
class S3Config:
    """Where S3 lives; credentials stay out of URIs and logs."""

    endpoint: str | None = None  # e.g. http://127.0.0.1:8333; None = AWS
    region: str = "us-east-1"
    access_key: str | None = None  # None = environment / instance profile
    secret_key: str | None = None

    @classmethod
    def from_env(cls) -> S3Config:
        return cls(
            endpoint=os.environ.get("VIZSWEEP_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )

    def __repr__(self) -> str:  # never print secrets
        return f"S3Config(endpoint={self.endpoint!r}, region={self.region!r})"


_configured: S3Config | None = None


def configure(cfg: S3Config | None) -> None:
    """Set this process's S3 config (jobs hand the driver's config to their Ray workers this way)."""
    global _configured
    _configured = cfg


def current_s3() -> S3Config:
    """The S3 config in force: the configured one, else the environment's."""
    return _configured or S3Config.from_env()


@lru_cache(maxsize=8)
def _s3(cfg: S3Config) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {"region": cfg.region}
    if cfg.endpoint:
        parsed = urlparse(cfg.endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if cfg.access_key and cfg.secret_key:
        kwargs["access_key"] = cfg.access_key
        kwargs["secret_key"] = cfg.secret_key
    return pafs.S3FileSystem(**kwargs)


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def normalize(uri: str | os.PathLike) -> str:
    """Canonical form: ``s3://b/k`` stays, local paths become absolute ``file://`` URIs."""
    uri = str(uri)
    if is_s3(uri):
        return "s3://" + uri[len("s3://") :].rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StoreError(
            f"unsupported store URI scheme {scheme!r} in {uri!r}: use a local path, file:// or s3://"
        )
    return "file://" + os.path.abspath(os.path.expanduser(uri))


def resolve(uri: str | os.PathLike, s3: S3Config | None = None) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem and the path inside it for a URI."""
    uri = normalize(uri)
    if is_s3(uri):
        path = uri[len("s3://") :]
        if not path or path.startswith("/"):
            raise StoreError(f"malformed S3 URI {uri!r}: expected s3://bucket/key")
        return _s3(s3 or current_s3()), path
    return pafs.LocalFileSystem(), uri[len("file://") :]


def join(uri: str, *parts: str) -> str:
    uri = normalize(uri)
    return posixpath.join(uri, *[str(p).strip("/") for p in parts])


def local_path(uri: str) -> str | None:
    """The local filesystem path of a URI, or None for S3."""
    uri = normalize(uri)
    return None if is_s3(uri) else uri[len("file://") :]


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError as e:
        raise StoreError(f"not found: {uri}") from e


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object atomically.

    Locally: a temporary file in the same folder, then ``os.replace``. On S3 an
    object becomes visible only when its upload completes, so a killed writer
    leaves nothing behind.
    """
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def listdir(uri: str, recursive: bool = False) -> list[str]:
    """URIs of the files (not folders) under ``uri``; empty if it does not exist."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    sel = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    base = normalize(uri)
    out = []
    for info in fs.get_file_info(sel):
        if info.type == pafs.FileType.File:
            rel = posixpath.relpath(info.path, path)
            out.append(posixpath.join(base, rel))
    return sorted(out)


def list_subdirs(uri: str) -> list[str]:
    fs, path = resolve(uri)
    sel = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    base = normalize(uri)
    return sorted(
        posixpath.join(base, posixpath.basename(i.path))
        for i in fs.get_file_info(sel)
        if i.type == pafs.FileType.Directory
    )


def delete(uri: str) -> None:
    """Delete a file or a whole folder; missing is fine."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def move(src: str, dst: str) -> None:
    fs, spath = resolve(src)
    _, dpath = resolve(dst)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(dpath), exist_ok=True)
    fs.move(spath, dpath)


def upload_file(local: str, uri: str) -> None:
    """Copy a local file to the store (atomically, as :func:`write_bytes`)."""
    with open(local, "rb") as f:
        write_bytes(uri, f.read())


def download_file(uri: str, local: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    data = read_bytes(uri)
    tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, local)
    return local


# --- manifests -----------------------------------------------------------------


def manifest_uri(dir_uri: str) -> str:
    return join(dir_uri, MANIFEST)


def read_manifest(dir_uri: str) -> dict | None:
    """The manifest of a finished stage, or None when the stage is not done."""
    uri = manifest_uri(dir_uri)
    if not exists(uri):
        return None
    try:
        m = read_json(uri)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptManifest(f"{uri} is not readable JSON ({e}): the manifest is damaged") from e
    if not isinstance(m, dict):
        raise CorruptManifest(f"{uri} holds a {type(m).__name__}, not a JSON object: the manifest is damaged")
    return m


def is_done(dir_uri: str) -> bool:
    return exists(manifest_uri(dir_uri))


def write_manifest(dir_uri: str, manifest: dict, known: dict[str, dict] | None = None) -> dict:
    """Commit a stage: the manifest is the last thing written.

    Its ``integrity`` record holds ``{"size", "digest"}`` of each file the manifest lists in
    ``files`` (a stage without ``files``, e.g. a dataset, gets its Parquet and tar parts);
    ``known`` passes records a writer already computed (``file_record``), the rest are read back.
    """
    rels = list(manifest["files"]) if "files" in manifest else data_parts(dir_uri)
    record = integrity_record(dir_uri, rels, known)
    body = {"created_at": time.time(), **manifest, "integrity": record}
    write_json(manifest_uri(dir_uri), body)
    return body


def committed_files(dir_uri: str) -> list[str]:
    """Files a manifest names (readers never glob a stage folder: stale parts may lie there)."""
    m = read_manifest(dir_uri)
    if m is None:
        raise StoreError(f"stage at {dir_uri} is not complete: no {MANIFEST} (run the stage, or resume it)")
    return [join(dir_uri, f) for f in m.get("files", [])]


# --- integrity records -----------------------------------------------------------

DIGEST = "blake2b-128"  # fast (about 1 GB/s a core) and in the standard library
DATA_SUFFIXES = (".parquet", ".tar")
_CHUNK = 8 << 20


def _hasher() -> Any:
    return hashlib.blake2b(digest_size=16)


def file_record(data: bytes) -> dict:
    """``{"size", "digest"}`` of bytes about to be written (a writer's ``known`` entry)."""
    h = _hasher()
    h.update(data)
    return {"size": len(data), "digest": h.hexdigest()}


def digest_file(uri: str) -> dict:
    """``{"size", "digest"}`` of a stored file, streamed in chunks."""
    fs, path = resolve(uri)
    h, n = _hasher(), 0
    try:
        with fs.open_input_stream(path) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                n += len(chunk)
    except FileNotFoundError as e:
        raise StoreError(f"not found: {uri}") from e
    return {"size": n, "digest": h.hexdigest()}


def file_sizes(dir_uri: str, rels: Iterable[str]) -> dict[str, int]:
    """Sizes of the files under ``dir_uri`` that ``rels`` name: one listing per folder they lie in."""
    fs, path = resolve(dir_uri)
    out: dict[str, int] = {}
    for sub in sorted({posixpath.dirname(r) for r in rels}):
        sel = pafs.FileSelector(posixpath.join(path, sub) if sub else path, allow_not_found=True)
        for info in fs.get_file_info(sel):
            if info.type == pafs.FileType.File:
                out[posixpath.relpath(info.path, path)] = info.size
    return out


def data_parts(dir_uri: str) -> list[str]:
    """Parquet and tar files under ``dir_uri`` (relative), outside ``_``-folders such as ``_index``."""
    fs, path = resolve(dir_uri)
    sel = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    rels = [
        posixpath.relpath(i.path, path)
        for i in fs.get_file_info(sel)
        if i.type == pafs.FileType.File and i.path.endswith(DATA_SUFFIXES) and ".tmp-" not in i.path
    ]
    return sorted(r for r in rels if not any(p.startswith("_") for p in r.split("/")[:-1]))


def integrity_record(dir_uri: str, rels: list[str], known: dict[str, dict] | None = None) -> dict:
    """The manifest's ``integrity`` entry: size and checksum of each of ``rels`` (hashed in threads)."""
    known = known or {}
    todo = [r for r in rels if r not in known]
    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL on large buffers
        sums = dict(zip(todo, pool.map(lambda r: digest_file(join(dir_uri, r)), todo)))
    return {"algo": DIGEST, "files": {r: known.get(r) or sums[r] for r in rels}}


# --- content keys --------------------------------------------------------------


def json_plain(x: Any) -> Any:
    """Tuples as lists, recursively: what a JSON round trip gives back (keys and manifests compare equal)."""
    if isinstance(x, dict):
        return {k: json_plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_plain(v) for v in x]
    return x


def content_key(*parts: Any, length: int = 16) -> str:
    """A stable hash of everything that determines a stage's output.

    Pass the inputs' keys, the job's spec (dataclasses and dicts are fine) and
    the job's code version; equal inputs give equal keys on every machine.
    """
    blob = json.dumps([_canon(p) for p in parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _canon(obj: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        return _canon(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canon(v) for v in obj]
    if isinstance(obj, float):
        return repr(obj)
    return obj


def walk_files(uri: str) -> Iterator[str]:
    yield from listdir(uri, recursive=True)
