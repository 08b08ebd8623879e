"""The collage job (SCIENCE.md §6, Active fooling's D_fool): layout, proportions, reuse."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import jobs.collages as collages
from jobs.collages import CollageSpec, read_collages, run_collages
from shared import store
from shared.datasets import iter_records
from shared.models import model_info


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    from shared.synth import generate

    root = str(tmp_path_factory.mktemp("collage-data"))
    generate(root, classes=3, train_per_class=4, val_per_class=3, size=32, seed=0)
    return root


def test_counts_follow_heo_proportion():
    assert CollageSpec(dataset="/x", c1=0, c2=1).counts() == {"train": 1100, "heldout": 200}
    assert CollageSpec(dataset="/x", c1=0, c2=1, images=13).counts() == {"train": 11, "heldout": 2}
    assert CollageSpec(dataset="/x", c1=0, c2=1, images=2).counts() == {"train": 1, "heldout": 1}
    with pytest.raises(ValueError, match="two different class"):
        CollageSpec(dataset="/x", c1=1, c2=1)


def test_collages_are_2x2_of_both_classes_then_reused(tiny_data, tmp_path, monkeypatch):
    spec = CollageSpec(dataset=tiny_data, c1=0, c2=2, images=13, tile=16)
    res = run_collages(spec, str(tmp_path))
    assert not res.reused and res.counts == {"train": 11, "heldout": 2}
    m = store.read_manifest(res.uri)
    assert m["kind"] == "collages" and m["files"] == [
        "parquet/train/part-00000.parquet",
        "parquet/heldout/part-00000.parquet",
    ]
    table = pq.read_table(store.join(res.uri, m["files"][0]))
    assert table.num_rows == 11 and set(table.column("c2").to_pylist()) == {2}
    by_id = {r["image_id"]: r for r in iter_records(tiny_data, "train")}
    for row in table.to_pylist():
        assert sorted(row["cells"]) == [0, 0, 2, 2] and len(set(row["sources"])) == 4
        assert [by_id[s]["label"] for s in row["sources"]] == row["cells"]  # each cell shows its class
        im = Image.open(io.BytesIO(row["image"]["bytes"]))
        assert im.size == (32, 32)
    held = pq.read_table(store.join(res.uri, m["files"][1])).to_pylist()
    val_ids = {r["image_id"] for r in iter_records(tiny_data, "val")}
    assert all(s in val_ids for r in held for s in r["sources"])  # held-out tiles never seen in training
    arrangements = {tuple(r["cells"]) for r in table.to_pylist()}
    assert len(arrangements) > 1  # cells are not fixed per class

    x, c1, c2 = read_collages(res.uri, "heldout", model_info("vgg_mini").preprocess)
    assert x.shape == (2, 3, 56, 56) and c1.tolist() == [0, 0] and c2.tolist() == [2, 2]
    assert np.isfinite(x.numpy()).all()

    monkeypatch.setattr(
        collages, "_collage_table", lambda *a, **k: pytest.fail("must reuse the committed set")
    )
    again = run_collages(spec, str(tmp_path))
    assert again.reused and again.key == res.key and again.counts == res.counts
    other = CollageSpec(dataset=tiny_data, c1=0, c2=2, images=13, tile=16, seed=1)
    assert store.content_key(other) != store.content_key(spec)


def test_too_few_images_of_a_class(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="class 7 has 0 image"):
        run_collages(CollageSpec(dataset=tiny_data, c1=0, c2=7, images=4, tile=16), str(tmp_path))
