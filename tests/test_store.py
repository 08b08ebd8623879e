"""The store: local and S3 behave alike; manifests commit stages; keys are stable."""

from __future__ import annotations

import pytest

from shared import store


def test_normalize_and_join(tmp_path):
    assert store.normalize(str(tmp_path)) == f"file://{tmp_path}"
    assert store.normalize(f"file://{tmp_path}/") == f"file://{tmp_path}"
    assert store.join("s3://b/k", "x", "y.json") == "s3://b/k/x/y.json"
    with pytest.raises(store.StoreError, match="unsupported store URI scheme 'gs'"):
        store.normalize("gs://bucket/x")
    with pytest.raises(store.StoreError, match="malformed S3 URI"):
        store.resolve("s3://")


def test_content_key_is_stable_and_sensitive():
    a = store.content_key({"lr": 1e-5, "layers": ["conv5"]}, "v1")
    assert a == store.content_key({"layers": ["conv5"], "lr": 1e-5}, "v1")
    assert a != store.content_key({"lr": 2e-5, "layers": ["conv5"]}, "v1")
    assert len(a) == 16


def _roundtrip(root: str) -> None:
    stage = store.join(root, "stage")
    assert not store.is_done(stage)
    store.write_bytes(store.join(stage, "a.bin"), b"hello")
    assert store.read_bytes(store.join(stage, "a.bin")) == b"hello"
    with pytest.raises(store.StoreError, match="not complete"):
        store.committed_files(stage)
    store.write_manifest(stage, {"files": ["a.bin"]})
    assert store.is_done(stage)
    assert store.committed_files(stage) == [store.join(stage, "a.bin")]
    assert [f.rsplit("/", 1)[-1] for f in store.listdir(stage)] == ["_MANIFEST.json", "a.bin"]
    store.delete(stage)
    assert not store.exists(store.join(stage, "a.bin"))


def test_local_roundtrip(tmp_path):
    _roundtrip(str(tmp_path))
    # atomic writes leave no temporary files behind
    store.write_bytes(str(tmp_path / "x" / "f"), b"1")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["f"]


def test_read_missing_is_clear(tmp_path):
    with pytest.raises(store.StoreError, match="not found"):
        store.read_bytes(str(tmp_path / "nope"))


@pytest.mark.slow
def test_s3_roundtrip(s3_server):
    _roundtrip(f"s3://{s3_server.bucket}/store-test")
    # credentials never appear in the printed config
    assert s3_server.secret_key not in repr(store.S3Config.from_env())
