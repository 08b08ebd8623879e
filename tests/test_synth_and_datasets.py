"""The synthetic dataset and the readers: determinism, one schema for three layouts, corrupt images, fetch by id."""

from __future__ import annotations

import io
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared import store, synth
from shared.datasets import (
    LAYOUTS,
    DatasetError,
    Preprocess,
    decode_batch,
    decode_image,
    detect_layout,
    iter_records,
    list_shards,
)
from shared.image_index import build_index, fetch_images

TINY = {"classes": 16, "train_per_class": 4, "val_per_class": 2, "size": 32, "shard_size": 24}
PRE = Preprocess(resize=36, crop=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synth.generate(str(root), **TINY)
    return root


@pytest.fixture(scope="module")
def hf_copy(tiny, tmp_path_factory) -> Path:
    """An HF-style parquet folder: no image_id column, no image.path, many small row groups."""
    root = tmp_path_factory.mktemp("hf")
    for split in ("train", "val"):
        (root / split).mkdir()
        for f in sorted((tiny / "parquet" / split).iterdir()):
            t = pq.read_table(f).drop_columns(["image_id"])
            image = pa.StructArray.from_arrays(
                [t.column("image").combine_chunks().field("bytes"), pa.nulls(t.num_rows, pa.string())],
                names=["bytes", "path"],
            )
            t = t.set_column(0, "image", image)
            pq.write_table(t, root / split / f.name, row_group_size=5)
    return root


def records(uri, split: str, layout: str | None = None) -> dict[str, tuple[int, bytes]]:
    return {r["image_id"]: (r["label"], r["image"]) for r in iter_records(str(uri), split, layout)}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != store.MANIFEST and "_index" not in p.parts
    }


# --- synth -------------------------------------------------------------------------


def test_generation_is_deterministic(tiny, tmp_path):
    synth.generate(str(tmp_path / "again"), **TINY)
    assert tree_bytes(tiny) == tree_bytes(tmp_path / "again")
    other = synth.render(3, seed=1, split="train", index=0, size=32)
    assert other != synth.render(3, seed=0, split="train", index=0, size=32)


def test_manifest_counts_and_reuse(tiny):
    m = store.read_manifest(str(tiny))
    assert m["splits"]["train"]["images"] == 64 and m["splits"]["val"]["images"] == 32
    assert m["classes"] == store.read_json(store.join(str(tiny), "classes.json"))
    assert synth.generate(str(tiny), **TINY)["created_at"] == m["created_at"]  # reused, not rewritten
    with pytest.raises(ValueError, match="other parameters.*size"):
        synth.generate(str(tiny), **{**TINY, "size": 48})


def test_classes_are_distinct_combinations():
    names = synth.class_names(16)
    assert len(set(names)) == 16 and names[0] == "red_circle_solid"
    space = synth.class_space()[:16]
    for i, a in enumerate(space):
        for b in space[i + 1 :]:
            assert a[0] != b[0] or a[1] != b[1]  # shape or colour differs
    assert len(synth.class_names(len(synth.class_space()))) == 224
    with pytest.raises(ValueError, match="classes=225"):
        synth.class_names(225)


def test_every_class_is_rendered_and_balanced(tiny):
    by_class: dict[int, int] = {}
    for _, (label, data) in records(tiny, "train").items():
        assert decode_image(data, PRE) is not None
        by_class[label] = by_class.get(label, 0) + 1
    assert by_class == {c: 4 for c in range(16)}


def test_shards_mix_classes(tiny):
    first = list_shards(str(tiny), "train", "parquet")[0]
    labels = set(pq.read_table(first.removeprefix("file://"), columns=["label"]).column("label").to_pylist())
    assert len(labels) >= 8


def test_parquet_schema_is_hf_like(tiny):
    schema = pq.read_schema(tiny / "parquet" / "train" / "part-00000.parquet")
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("label").type == pa.int64() and schema.field("image_id").type == pa.string()
    assert b"huggingface" in schema.metadata


# --- readers -----------------------------------------------------------------------


def test_detect_layout(tiny, hf_copy, tmp_path):
    assert detect_layout(str(tiny)) == "parquet"
    for layout in LAYOUTS:
        assert detect_layout(str(tiny / layout)) == layout
    assert detect_layout(str(hf_copy)) == "parquet"
    plain = tmp_path / "plain"
    shutil.copytree(tiny / "folder" / "val", plain / "val")  # class dirs, no label_map.json
    assert detect_layout(str(plain)) == "folder"
    assert records(plain, "val") == records(tiny, "val")  # labels from the sorted class dirs
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot tell the layout"):
        detect_layout(str(tmp_path / "empty"))


def test_three_layouts_read_back_the_same(tiny):
    for split in ("train", "val"):
        ref = records(tiny, split, "parquet")
        assert len(ref) == (64 if split == "train" else 32)
        for layout in ("webdataset", "folder"):
            assert records(tiny, split, layout) == ref, layout
            assert records(tiny / layout, split) == ref, f"{layout} given as a layout folder"
    ids = sorted(ref)[:8]
    pixels = []
    for layout in LAYOUTS:
        recs = {r["image_id"]: r for r in iter_records(str(tiny), "val", layout)}
        batch = {k: np.array([recs[i][k] for i in ids], dtype=object) for k in ("image_id", "label", "image")}
        out = decode_batch(batch, PRE)
        assert out["pixels"].shape == (8, 3, 32, 32) and out["pixels"].dtype == np.float32
        assert out["ok"].all() and list(out["image_id"]) == ids
        pixels.append(out["pixels"])
    assert np.array_equal(pixels[0], pixels[1]) and np.array_equal(pixels[0], pixels[2])


def test_hf_parquet_without_ids(tiny, hf_copy):
    got = records(hf_copy, "train")
    ref = records(tiny, "train")
    assert sorted(lab for lab, _ in got.values()) == sorted(lab for lab, _ in ref.values())
    assert sorted(got)[0] == "part-00000-0000000"  # shard + row when nothing names the image
    assert {b for _, b in got.values()} == {b for _, b in ref.values()}


def test_missing_path_and_empty_shards_are_clear(tiny, tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*split 'train'.*layout webdataset"):
        list_shards(str(tmp_path / "nope"), "train", "webdataset")
    with pytest.raises(
        DatasetError, match=r"split 'test' not found for the parquet layout.*splits there: train, val"
    ):
        list_shards(str(tiny), "test", "parquet")
    empty = tmp_path / "empty"
    (empty / "webdataset" / "train").mkdir(parents=True)
    (empty / "webdataset" / "train" / "README.txt").write_text("no shards yet")
    with pytest.raises(
        DatasetError, match=r"empty shard set for split 'train' \(webdataset layout\).*\*\.tar"
    ):
        list(iter_records(str(empty), "train"))
    with pytest.raises(DatasetError, match="unknown layout 'lmdb'"):
        list_shards(str(tiny), "train", "lmdb")


def test_corrupt_images_are_flagged_not_raised(tiny, tmp_path):
    # parquet: a copy of a shard with garbage and a truncated JPEG in it
    shard = tiny / "parquet" / "val" / "part-00000.parquet"
    t = pq.read_table(shard)
    images = t.column("image").to_pylist()
    images[1]["bytes"] = b"this is not a jpeg"
    images[2]["bytes"] = images[2]["bytes"][: len(images[2]["bytes"]) // 2]
    t = t.set_column(0, "image", pa.array(images, t.schema.field("image").type))
    (tmp_path / "bad" / "val").mkdir(parents=True)
    pq.write_table(t, tmp_path / "bad" / "val" / "part-00000.parquet")
    recs = list(iter_records(str(tmp_path / "bad"), "val"))
    batch = {k: np.array([r[k] for r in recs], dtype=object) for k in ("image_id", "label", "image")}
    out = decode_batch(batch, PRE)
    assert not out["ok"][1] and not out["ok"][2] and out["ok"][[0, *range(3, len(recs))]].all()
    assert not out["pixels"][1].any()
    assert decode_image(b"", PRE) is None and decode_image(None, PRE) is None

    # folder: garbage written into a copy of the tree
    folder = tmp_path / "folder"
    shutil.copytree(tiny / "folder", folder)
    victim = sorted((folder / "val").rglob("*.JPEG"))[0]
    victim.write_bytes(os.urandom(300))
    recs = {r["image_id"]: r for r in iter_records(str(folder), "val")}
    r = recs[victim.stem]
    out = decode_batch({k: np.array([r[k]], dtype=object) for k in ("image_id", "label", "image")}, PRE)
    assert out["ok"].tolist() == [False]


def test_preprocess_is_imagenet_like():
    pre = Preprocess.imagenet()
    assert (pre.resize, pre.crop) == (256, 224) and pre.mean == (0.485, 0.456, 0.406)
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (80, 40), (255, 0, 0)).save(buf, format="PNG")
    arr = decode_image(buf.getvalue(), pre)
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    assert np.allclose(arr[0], (1 - 0.485) / 0.229, atol=1e-3) and np.allclose(
        arr[1], -0.456 / 0.224, atol=1e-3
    )
    with pytest.raises(ValueError, match="crop"):
        Preprocess(resize=32, crop=64)
    with pytest.raises(ValueError, match="std"):
        Preprocess(std=(0.2, 0.0, 0.2))


# --- fetch by id ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fetch_images_matches_iter_records(tiny, layout):
    ref = records(tiny, "train", layout)
    ids = random.Random(7).sample(sorted(ref), 12)
    got = fetch_images(str(tiny), "train", ids, layout)
    assert set(got) == set(ids) and all(got[i] == ref[i][1] for i in ids)
    index = build_index(str(tiny), "train", layout)
    assert index.endswith(f"/_index/{layout}-train.parquet")
    table = pq.read_table(store.local_path(index))
    assert table.num_rows == 64 and table.column("image_id").to_pylist() == sorted(ref)
    with pytest.raises(DatasetError, match=r"1 of 2 image id\(s\).*'train-9999999'.*look like"):
        fetch_images(str(tiny), "train", [ids[0], "train-9999999"], layout)


def test_fetch_images_by_row_group_without_ids(hf_copy):
    ref = records(hf_copy, "val")
    ids = random.Random(3).sample(sorted(ref), 9)
    got = fetch_images(str(hf_copy), "val", ids)
    assert all(got[i] == ref[i][1] for i in ids)
    groups = pq.read_table(store.local_path(build_index(str(hf_copy), "val")), columns=["row_group"])
    assert max(groups.column("row_group").to_pylist()) >= 3


# --- Ray Data ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_started():
    # the project's quiet start (jobs.raysetup); setting RAY_BACKEND_LOG_LEVEL here would leak into
    # the environment of every later test's subprocesses (Ray's C++ core prints a line when it is set)
    import ray
    from ray.data import DataContext

    from jobs.raysetup import ensure_ray

    started = not ray.is_initialized()
    if started:
        ensure_ray(num_cpus=2)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = ctx.print_on_execution_start = ctx.enable_auto_log_stats = False
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_read_records_matches_iter_records(tiny, hf_copy, ray_started):
    from shared.datasets import read_records

    ref = records(tiny, "val")
    for layout in LAYOUTS:
        ds = read_records(str(tiny), "val", layout)
        assert ds.schema().names == ["image_id", "label", "image"]
        got = {r["image_id"]: (r["label"], r["image"]) for r in ds.take_all()}
        assert got == ref, layout
        decoded = ds.map_batches(decode_batch, fn_kwargs={"pre": PRE}, batch_format="numpy").take_batch(4)
        assert decoded["pixels"].shape == (4, 3, 32, 32) and decoded["ok"].all()
    # no id column: a whole-shard reader keeps the shard + row ids of iter_records
    got = {r["image_id"]: (r["label"], r["image"]) for r in read_records(str(hf_copy), "val").take_all()}
    assert got == records(hf_copy, "val")


@pytest.mark.slow
def test_s3_generate_read_fetch(s3_server, ray_started):
    from shared.datasets import read_records

    uri = f"s3://{s3_server.bucket}/datasets/tiny"
    synth.generate(uri, **{**TINY, "train_per_class": 2})
    ref = records(uri, "val", "parquet")
    assert len(ref) == 32 and records(uri, "val", "webdataset") == ref
    ids = sorted(ref)[::5]
    for layout in ("webdataset", "parquet"):
        got = fetch_images(uri, "val", ids, layout)
        assert all(got[i] == ref[i][1] for i in ids)
    got = {r["image_id"]: (r["label"], r["image"]) for r in read_records(uri, "val", "webdataset").take_all()}
    assert got == ref
