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
    m = store.write_manifest(stage, {"files": ["a.bin"]})
    assert store.is_done(stage)
    from shared import integrity

    assert m["integrity"]["files"]["a.bin"]["size"] == 5 and integrity.check(stage, m, checksums=True) == []
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


def test_manifest_records_size_and_checksum_and_a_changed_file_is_named(tmp_path):
    from shared import integrity

    stage = store.join(str(tmp_path), "stage")
    store.write_bytes(store.join(stage, "a.bin"), b"hello")
    store.write_bytes(store.join(stage, "sub", "b.bin"), b"world!")
    m = store.write_manifest(stage, {"files": ["a.bin", "sub/b.bin"]})
    rec = m["integrity"]
    assert rec["algo"] == "blake2b-128"
    assert rec["files"]["a.bin"] == store.file_record(b"hello") and rec["files"]["a.bin"]["size"] == 5
    assert store.read_manifest(stage)["integrity"] == rec  # what was returned is what was committed
    assert integrity.check(stage, m, checksums=True) == []
    assert integrity.intact_manifest(stage) == store.read_manifest(stage)
    # same size, other bytes: only the checksum tells; a truncated file: the size alone tells
    (tmp_path / "stage" / "a.bin").write_bytes(b"jello")
    integrity._verified.clear()
    [p] = integrity.check(stage, m, checksums=True)
    assert p.uri.endswith("/stage/a.bin") and "checksum" in p.what
    (tmp_path / "stage" / "sub" / "b.bin").write_bytes(b"wor")
    problems = integrity.check(stage, m)
    assert [str(p) for p in problems] == [
        f"{store.join(stage, 'sub/b.bin')}: 3 bytes, the manifest records 6"
    ]
    assert integrity.intact_manifest(stage) is None  # a derived stage with a damaged file is not done
    with pytest.raises(integrity.CorruptStage, match=r"/stage: a\.bin: 5 bytes that differ.*removed it"):
        integrity.read_file(stage, "a.bin", m)
    assert not store.exists(stage)  # removed, manifest first: it will be computed again


def test_a_dataset_manifest_covers_its_shards_and_a_damaged_manifest_is_named(tmp_path):
    from shared import integrity

    root = str(tmp_path / "ds")
    store.write_bytes(store.join(root, "parquet", "val", "part-00000.parquet"), b"PAR1....PAR1")
    store.write_bytes(store.join(root, "_index", "parquet-val.parquet"), b"x")  # derived later: not recorded
    m = store.write_manifest(root, {"kind": "vizsweep-imagenet-import"})
    assert list(m["integrity"]["files"]) == ["parquet/val/part-00000.parquet"]
    integrity.check_dataset(root, "val")
    (tmp_path / "ds" / "parquet" / "val" / "part-00000.parquet").write_bytes(b"PAR1")
    with pytest.raises(integrity.CorruptDataset, match=r"part-00000\.parquet: 4 bytes.*import-imagenet"):
        integrity.check_dataset(root, "val")
    integrity.check_dataset(root, "train")  # only the split asked for is checked
    (tmp_path / "ds" / "_MANIFEST.json").write_text('{"kind": ')
    with pytest.raises(store.CorruptManifest, match="_MANIFEST.json is not readable JSON"):
        store.read_manifest(root)
