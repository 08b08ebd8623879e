"""Strict parsing of the URIs a user writes (store, dataset, checkpoints), before anything opens them.

``shared.store.normalize`` is lenient on purpose (every internal caller has a good URI); a
sweep spec is not: ``s3://`` with no bucket, ``s3:///x``, ``s3:/x`` (one slash: a local path
named ``s3:``), ``file://host/x`` or a URI with credentials in it would otherwise fail late,
deep inside pyarrow, or silently write somewhere unexpected. Imports nothing heavy.
"""

from __future__ import annotations

import os
import re

SCHEMES = ("file", "s3")  # and plain paths
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
USAGE = "use a local path, file:// or s3:// (file:///abs/path, s3://bucket/prefix)"


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not a usable store/dataset/checkpoint URI (None: it is)."""
    if uri != uri.strip():
        return f"{uri!r} starts or ends with white space; remove it"
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        return "contains a control character (a newline, tab or NUL); write the URI on one line"
    m = _SCHEME.match(uri)
    if m is None:
        return None  # a local path
    scheme, rest = m.group(1), uri[m.end() :]
    if not rest.startswith("//"):
        if scheme.lower() in SCHEMES:
            return f"{uri!r} has one slash after '{scheme}:'; write {scheme}://…"
        return None  # a local path with a colon in it ("run:3/x")
    if scheme not in SCHEMES:
        return f"unsupported URI scheme {scheme!r} in {uri!r}: {USAGE}"
    rest = rest[2:]
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest.startswith("/"):
            host = rest.split("/", 1)[0]
            what = f"names host {host!r}" if host else "has no path"
            return f"{uri!r} {what}; a file:// URI holds an absolute local path (file:///abs/path)"
        return None
    bucket = rest.split("/", 1)[0]
    if not bucket:
        return f"{uri!r} has no bucket; write s3://bucket/prefix"
    if "@" in bucket or ":" in bucket:
        return (
            "the bucket part of this s3:// URI holds '@' or ':' (credentials or an endpoint); "
            "credentials go in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the endpoint in "
            "AWS_ENDPOINT_URL, never in the URI: write s3://bucket/prefix"
        )
    if not _BUCKET.match(bucket):
        return f"bad bucket name {bucket!r} in {uri!r}: letters, digits, '.', '-' and '_' only"
    if "//" in rest:
        return f"{uri!r} has an empty path segment ('//'); write s3://bucket/a/b"
    return None


def local_path(uri: str) -> str | None:
    """The local path of a URI (None for s3://) without importing pyarrow, as ``shared.store.local_path``.

    Raises ValueError for a scheme the store does not support."""
    uri = str(uri)
    if uri.startswith("s3://"):
        return None
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        raise ValueError(f"unsupported URI scheme {uri.split('://', 1)[0]!r}: {USAGE}")
    return os.path.abspath(os.path.expanduser(uri))
