"""Activation tables, on both executors (local, Ray Data): right values, equal tables, corrupt images
counted, S3 == local, commits are atomic, the executor is chosen by scale and recorded."""

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

from jobs import activation_parts
from jobs.activations import ActivationsSpec, choose_executor, read_table, run_activations, table_uri
from jobs.topk import render_topk_grid, run_topk
from shared import store
from shared.models.zoo import build_model, model_info, save_checkpoint
from shared.synth import generate

LAYERS = ("conv3", "conv5")
EXECUTORS = pytest.mark.parametrize("executor", ["local", "ray-data"])


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
    if kw.get("executor") == "ray-data":
        kw.setdefault("num_actors", 1)  # one model-loading actor: half the pool's start-up on 2 cores
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


@pytest.mark.slow
@EXECUTORS
def test_tables_match_manual_forward_and_rerun_is_skipped(setup, ray_local, tmp_path, executor):
    store_uri = str(tmp_path / "store")
    res = run_activations(_spec(setup, executor=executor), store_uri)
    assert not res.skipped and res.rows == 96 and res.corrupt == 0 and res.executor == executor
    for layer in LAYERS:
        m = store.read_manifest(res.tables[layer])
        assert m["rows"] == 96 and m["units"] == (128 if layer == "conv3" else 64)
        assert m["executor"] == executor
    ids, labels, conv5 = read_table(res.tables["conv5"])
    assert len(set(ids)) == 96 and conv5.dtype == np.float32
    sample = sorted(ids)[:12]
    manual = _manual_scores(setup["model"], setup["data"], sample)
    for layer in LAYERS:
        tids, _, scores = read_table(res.tables[layer])
        row = {i: s for i, s in zip(tids, scores)}
        got = np.stack([row[i] for i in sample])
        np.testing.assert_allclose(got, manual[layer], rtol=1e-5, atol=1e-5)
    other = "ray-data" if executor == "local" else "local"  # the executor is not part of the key
    again = run_activations(_spec(setup, executor=other), store_uri)
    assert again.skipped and again.rows == 96 and again.executor == executor
    # top-k and its picture
    tk = run_topk(res.tables["conv5"], k=5)
    assert tk.table.num_rows == 64 * 5
    png = render_topk_grid(setup["data"], "val", tk.table, [0, 1, 2], str(tmp_path / "grid.png"), n=5)
    from PIL import Image

    assert Image.open(io.BytesIO(store.read_bytes(png))).size[0] > 300


@pytest.mark.slow
@EXECUTORS
def test_corrupt_images_are_counted_not_fatal(setup, ray_local, tmp_path, executor):
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
    spec = _spec(setup, dataset=data, layers=("conv5",), executor=executor)
    res = run_activations(spec, str(tmp_path / "store"))
    assert res.corrupt == 2 and sorted(res.corrupt_ids) == sorted(bad_ids)
    assert res.rows == 48 - 2


@pytest.mark.slow
@pytest.mark.parametrize("on_disk, on_s3", [("ray-data", "local"), ("local", "ray-data")])
def test_s3_tables_equal_local_and_executors_agree(setup, ray_local, s3_server, tmp_path, on_disk, on_s3):
    """Each executor once on each store: the four tables are the same (ids, labels, scores to 1e-6)."""
    local = run_activations(_spec(setup, executor=on_disk), str(tmp_path / "store"))
    s3_store = f"s3://{s3_server.bucket}/acts-{os.getpid()}-{on_s3}"
    remote = run_activations(_spec(setup, executor=on_s3), s3_store)
    assert remote.tables["conv5"].startswith("s3://") and not remote.skipped
    assert (local.executor, remote.executor) == (on_disk, on_s3)
    for layer in LAYERS:
        a, b = read_table(local.tables[layer]), read_table(remote.tables[layer])
        oa, ob = np.argsort(a[0]), np.argsort(b[0])
        assert len(a[0]) == 96 and list(a[0][oa]) == list(b[0][ob])
        np.testing.assert_array_equal(a[1][oa], b[1][ob])
        np.testing.assert_allclose(a[2][oa], b[2][ob], rtol=1e-6, atol=1e-6)
    m = store.read_manifest(remote.tables["conv5"])
    assert m["rows"] == 96 and m["executor"] == on_s3


@pytest.mark.slow
@pytest.mark.parametrize("killed, rerun", [("local", "ray-data"), ("ray-data", "local")])
def test_interrupted_write_leaves_no_manifest(setup, ray_local, tmp_path, killed, rerun):
    """SIGKILL the driver while parts are being written: no manifest; a rerun (by the other executor)
    sweeps the stale parts and commits cleanly."""
    data = str(tmp_path / "data")
    generate(data, classes=16, train_per_class=1, val_per_class=40, size=48, seed=5, shard_size=40)
    store_uri = str(tmp_path / "store")
    address = ray_local.get_runtime_context().gcs_address
    script = textwrap.dedent(
        f"""
        import ray
        from jobs.raysetup import ensure_ray
        from jobs.activations import ActivationsSpec, run_activations
        ensure_ray(address={address!r})
        spec = ActivationsSpec(dataset={data!r}, split="val", model="alexnet_mini", weights={setup["weights"]!r},
                               variant_key="v0", layers=("conv5",), batch_size=2, executor={killed!r}, num_actors=1)
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
    res = run_activations(
        _spec(setup, dataset=data, layers=("conv5",), batch_size=64, executor=rerun), store_uri
    )
    assert res.rows == 640 and res.executor == rerun
    m = store.read_manifest(out_dir)
    assert m["rows"] == 640 and not set(stale) & set(m["files"])
    assert sorted(os.listdir(local_dir)) == sorted(["_MANIFEST.json", *m["files"]])


# --- the local executor's own behaviour and the executor choice (no Ray needed) -------------------


def test_a_failing_stage_stops_the_local_pipeline_and_nothing_is_committed(setup, tmp_path, monkeypatch):
    """An error in the writer thread reaches the caller (no hang) and no manifest is written."""
    calls = []

    def broken(table, dirs, name):
        calls.append(name)
        raise OSError(f"disk full writing {name}")

    monkeypatch.setattr(activation_parts, "write_block", broken)
    store_uri = str(tmp_path / "store")
    with pytest.raises(OSError, match="disk full writing part-"):
        run_activations(_spec(setup, executor="local", batch_size=8), store_uri)
    assert len(calls) == 1  # the pipeline stopped at the first failure
    assert not store.is_done(table_uri(store_uri, "v0", "conv5", "init", "val"))


def test_limit_and_progress_on_the_local_executor(setup, tmp_path):
    seen: list[tuple[int, int | None, str]] = []
    spec = _spec(setup, executor="local", batch_size=16, limit=40, layers=("conv5",))
    res = run_activations(
        spec, str(tmp_path / "store"), progress=lambda d, t, **kw: seen.append((d, t, kw["phase"]))
    )
    ids, _, scores = read_table(res.tables["conv5"])
    assert res.rows == 40 and len(set(ids)) == 40 and scores.shape == (40, 64)
    assert seen[-1] == (40, 40, "activations") and [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    m = store.read_manifest(res.tables["conv5"])
    assert len(m["files"]) == 3 and all(f.startswith("part-") for f in m["files"])  # 16 + 16 + 8 rows


def test_auto_executor_is_local_on_one_node_and_ray_data_on_several(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert choose_executor("auto") == "local"  # Ray not started: the job fits this process

    class Context:  # the driver has no task id; a Ray task or actor (a Tune trial) has one
        task_id: str | None = None

        def get_task_id(self) -> str | None:
            return self.task_id

    ctx = Context()
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: ctx)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": False}])
    assert choose_executor("auto") == "local"
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    assert choose_executor("auto") == "ray-data"
    assert choose_executor("local") == "local"  # an explicit setting wins
    ctx.task_id = "c8ef45ccd0112571ffffffffffffffffffffffff01000000"  # inside a trial: its own resources
    assert choose_executor("auto") == "local"


def test_an_unknown_executor_is_refused_with_the_valid_ones(setup, tmp_path):
    with pytest.raises(ValueError, match="executor='spark'.*auto, local, ray-data"):
        run_activations(_spec(setup, executor="spark"), str(tmp_path / "store"))


def test_tables_from_the_split_a_trial_decoded_equal_the_read_ones(setup, tmp_path):
    """jobs.decoded_splits: a trial's final tables take its decoded train split; the tables are the same."""
    from jobs import decoded_splits
    from jobs.train_stream import decode_rows, split_rows

    pre = model_info("alexnet_mini").preprocess
    spec = _spec(setup, executor="local", split="train", batch_size=24)
    decoded_splits.forget()
    read = run_activations(spec, str(tmp_path / "read"))
    split = split_rows(setup["data"], "train")
    rows = decode_rows(split, 0, split.index.num_rows, pre)
    ids = np.asarray(split.index.column("image_id").to_pylist(), dtype=object)
    decoded_splits.keep(setup["data"], "train", pre, {**rows, "image_id": ids})
    try:
        kept = decoded_splits.find(setup["data"], "train", pre)
        assert kept is not None
        first = kept.arrays["pixels"][0].copy()
        kept.arrays["pixels"][0] += 1.0  # a marker: tables from the kept split would show it
        marked = run_activations(spec, str(tmp_path / "marked"))
        kept.arrays["pixels"][0] = first
        taken = run_activations(spec, str(tmp_path / "taken"))
    finally:
        decoded_splits.forget()
    for layer in LAYERS:
        a, b, m = (read_table(r.tables[layer]) for r in (read, taken, marked))
        assert list(a[0]) == list(b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        assert not np.array_equal(a[2][0], m[2][0]) and np.array_equal(a[2][1:], m[2][1:])
