"""Activation tables on Ray Data: right values, corrupt images counted, S3 == local, commits are atomic."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jobs.activations import ActivationsSpec, read_table, run_activations, table_uri
from jobs.topk import render_topk_grid, run_topk
from shared import store
from shared.models.zoo import build_model, model_info, save_checkpoint
from shared.synth import generate

pytestmark = pytest.mark.slow
LAYERS = ("conv3", "conv5")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("acts")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=4, val_per_class=6, size=48, seed=3, shard_size=40)
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    weights = save_checkpoint(model, "alexnet_mini", str(root / "model.pt"))
    return {"root": root, "data": data, "weights": weights, "model": model.eval()}


def _spec(setup, **kw) -> ActivationsSpec:
    base = dict(
        dataset=setup["data"], split="val", model="alexnet_mini", weights=setup["weights"],
        variant_key="v0", layers=LAYERS, batch_size=32,
    )  # fmt: skip
    return ActivationsSpec(**{**base, **kw})


def _manual_scores(model, data: str, ids: list[str]) -> dict[str, np.ndarray]:
    """Scores from running features[:k+1] by hand (SCIENCE.md §1), no hooks."""
    from shared.datasets import decode_image
    from shared.image_index import fetch_images

    pre = model_info("alexnet_mini").preprocess
    images = fetch_images(data, "val", ids)
    x = torch.from_numpy(np.stack([decode_image(images[i], pre) for i in ids]))
    out = {}
    with torch.inference_mode():
        for layer, idx in (("conv3", 7), ("conv5", 11)):
            out[layer] = (model.features[: idx + 1](x) ** 2).sum(dim=(2, 3)).numpy()
    return out


def test_tables_match_manual_forward_and_rerun_is_skipped(setup, ray_local, tmp_path):
    store_uri = str(tmp_path / "store")
    res = run_activations(_spec(setup), store_uri)
    assert not res.skipped and res.rows == 96 and res.corrupt == 0
    for layer in LAYERS:
        m = store.read_manifest(res.tables[layer])
        assert m["rows"] == 96 and m["units"] == (128 if layer == "conv3" else 64)
    ids, labels, conv5 = read_table(res.tables["conv5"])
    assert len(set(ids)) == 96 and conv5.dtype == np.float32
    sample = sorted(ids)[:12]
    manual = _manual_scores(setup["model"], setup["data"], sample)
    for layer in LAYERS:
        tids, _, scores = read_table(res.tables[layer])
        row = {i: s for i, s in zip(tids, scores)}
        got = np.stack([row[i] for i in sample])
        np.testing.assert_allclose(got, manual[layer], rtol=1e-5, atol=1e-5)
    again = run_activations(_spec(setup), store_uri)
    assert again.skipped and again.rows == 96
    # top-k and its picture
    tk = run_topk(res.tables["conv5"], k=5)
    assert tk.table.num_rows == 64 * 5
    png = render_topk_grid(setup["data"], "val", tk.table, [0, 1, 2], str(tmp_path / "grid.png"), n=5)
    from PIL import Image

    assert Image.open(io.BytesIO(store.read_bytes(png))).size[0] > 300


def test_corrupt_images_are_counted_not_fatal(setup, ray_local, tmp_path):
    data = str(tmp_path / "data")
    generate(data, classes=16, train_per_class=2, val_per_class=3, size=48, seed=4, shard_size=16)
    shard = sorted((tmp_path / "data" / "parquet" / "val").glob("*.parquet"))[0]
    t = pq.read_table(shard)
    images = t.column("image").to_pylist()
    bad_ids = [t.column("image_id")[i].as_py() for i in (0, 5)]
    for i in (0, 5):
        images[i] = {"bytes": b"\xff\xd8 not a jpeg", "path": images[i]["path"]}
    t = t.set_column(
        t.schema.get_field_index("image"), "image", pa.array(images, t.schema.field("image").type)
    )
    pq.write_table(t, shard)
    # as if imported so: the manifest records the shard with its bad images (else it reads as damaged)
    m = store.read_manifest(data)
    store.write_manifest(data, {k: v for k, v in m.items() if k not in ("created_at", "integrity")})
    res = run_activations(_spec(setup, dataset=data, layers=("conv5",)), str(tmp_path / "store"))
    assert res.corrupt == 2 and sorted(res.corrupt_ids) == sorted(bad_ids)
    assert res.rows == 48 - 2


def test_s3_tables_equal_local(setup, ray_local, s3_server, tmp_path):
    local = run_activations(_spec(setup), str(tmp_path / "store"))
    s3_store = f"s3://{s3_server.bucket}/acts-{os.getpid()}"
    remote = run_activations(_spec(setup), s3_store)
    assert remote.tables["conv5"].startswith("s3://") and not remote.skipped
    for layer in LAYERS:
        a, b = read_table(local.tables[layer]), read_table(remote.tables[layer])
        oa, ob = np.argsort(a[0]), np.argsort(b[0])
        assert list(a[0][oa]) == list(b[0][ob])
        np.testing.assert_array_equal(a[1][oa], b[1][ob])
        np.testing.assert_array_equal(a[2][oa], b[2][ob])
    assert store.read_manifest(remote.tables["conv5"])["rows"] == 96


def test_interrupted_write_leaves_no_manifest(setup, ray_local, tmp_path):
    """SIGKILL the driver while parts are being written: no manifest; a rerun commits cleanly."""
    data = str(tmp_path / "data")
    generate(data, classes=16, train_per_class=1, val_per_class=100, size=48, seed=5, shard_size=50)
    store_uri = str(tmp_path / "store")
    address = ray_local.get_runtime_context().gcs_address
    script = textwrap.dedent(
        f"""
        import ray
        from jobs.raysetup import ensure_ray
        from jobs.activations import ActivationsSpec, run_activations
        ensure_ray(address={address!r})
        spec = ActivationsSpec(dataset={data!r}, split="val", model="alexnet_mini", weights={setup["weights"]!r},
                               variant_key="v0", layers=("conv5",), batch_size=2)
        run_activations(spec, {store_uri!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd(), start_new_session=True)
    out_dir = table_uri(store_uri, "v0", "conv5", "init", "val")
    local_dir = store.local_path(out_dir)
    try:
        # wait for the first committed-looking part, then kill mid-write
        from tests.services import wait_until

        wait_until(
            lambda: os.path.isdir(local_dir) and any(f.startswith("part-") for f in os.listdir(local_dir)),
            120,
            "first part",
            interval=0.01,
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not store.is_done(out_dir)
    stale = [f for f in os.listdir(local_dir) if f.startswith("part-")]
    assert stale
    res = run_activations(_spec(setup, dataset=data, layers=("conv5",), batch_size=8), store_uri)
    assert res.rows == 1600
    m = store.read_manifest(out_dir)
    assert m["rows"] == 1600 and not set(stale) & set(m["files"])
    assert sorted(os.listdir(local_dir)) == sorted(["_MANIFEST.json", *m["files"]])
