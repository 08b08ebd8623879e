"""The sweep's feature-visualisation stage (SCIENCE.md §5): spec setting, trial key, renders, reuse.

No Ray: the metrics stage's output (unit table, top-k tables) is committed by hand, as in
tests/test_metrics_job.py; the renders run 8 steps at 24 px on a tiny alexnet_mini.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from jobs import featureviz_stage
from jobs.featureviz import FeatureVizSpec, featureviz_dir
from jobs.metrics import TABLE, LayerSplitMetrics, MetricsResult
from jobs.runners import FineTuneRunner, TrialJob
from jobs.topk import topk_uri
from shared import store
from shared.figures import PNG_DPI
from shared.models.zoo import build_model, save_checkpoint
from shared.synth import generate
from shared.topk import StreamingTopK

FV = {"units": [1, 3], "steps": 8, "seed": 0, "batch_units": 64}
EVAL = {"k": 5, "tau_images": 16, "splits": ["val"], "picture_units": 0}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic data (64 val images), θ0, two "attacked" models, a reference embedder, a metrics stage."""
    root = tmp_path_factory.mktemp("fvstage")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=2, val_per_class=4, size=24, seed=5, shard_size=40)
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    init = save_checkpoint(model, "alexnet_mini", str(root / "init.pt"))
    finals = []
    for i in range(2):
        with torch.no_grad():
            model.features[10].weight.add_(0.3 * torch.randn_like(model.features[10].weight))
        finals.append(save_checkpoint(model, "alexnet_mini", str(root / f"final{i}.pt")))
    torch.manual_seed(2)
    ref_uri = save_checkpoint(build_model("resnet_mini")[0], "resnet_mini", str(root / "ref.pt"))
    st = str(root / "store")
    tables = {s: f"{st}/activations/model=v0/layer=conv5/state={s}/split=val" for s in ("init", "final")}
    for seed, s in enumerate(("init", "final")):
        _commit(topk_uri(tables[s], 5), "topk.parquet", _topk(data, seed), {"kind": "topk"})
    mdir = f"{st}/metrics/model=v0/state=s/layer=conv5/split=val"
    units = list(range(6))
    metrics = pa.table({"unit": units, "clip_delta": [0.1, 0.9, 0.2, 0.8, 0.3, 0.7], "kendall_tau": [0.5] * 6,
                        "dead_init": [False] * 6, "dead_final": [False, True, False, False, False, False]})  # fmt: skip
    _commit(mdir, TABLE, metrics, {"kind": "metrics"})
    per = LayerSplitMetrics("conv5", "val", mdir, f"{mdir}/{TABLE}", None, [], {}, 1.0, 1.0, 0.0, "mk", True)
    mres = MetricsResult(
        {("conv5", "val"): per}, {(s, "val"): {"conv5": t} for s, t in tables.items()}, True, 0.0
    )
    return {"data": data, "init": init, "finals": finals, "embedder": f"reference:{ref_uri}", "store": st,
            "mres": mres}  # fmt: skip


def _commit(folder: str, name: str, table: pa.Table, manifest: dict) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    store.write_bytes(store.join(folder, name), buf.getvalue().to_pybytes())
    store.write_manifest(folder, {**manifest, "files": [name]})


def _topk(data: str, seed: int, units: int = 6, k: int = 5) -> pa.Table:
    from shared.datasets import iter_records

    recs = list(iter_records(data, "val"))
    acc = StreamingTopK(units, k)
    acc.update(np.random.default_rng(seed).random((len(recs), units)).astype(np.float32),
               np.array([r["image_id"] for r in recs]), np.array([r["label"] for r in recs]))  # fmt: skip
    return acc.table()


def _job(setup, fv: dict | None, attack: str = "push-down") -> TrialJob:
    return TrialJob(
        attack=attack, config={"k": 5}, dataset=setup["data"], model="alexnet_mini", weights=setup["init"],
        variant_key="v0", layers=("conv5",), units="all", seed=0, train_split="train", val_split="val",
        evaluation={**EVAL, "embedder": setup["embedder"], **({} if fv is None else {"featureviz": fv})},
    )  # fmt: skip


def test_spec_setting_validates_and_names_the_field():
    from orchestrator.spec.schema import MetricsSettings

    assert MetricsSettings().featureviz is None  # off by default
    on = MetricsSettings(featureviz={"units": [3, 1]})
    assert on.featureviz.steps == 512 and on.featureviz.units == (3, 1)  # SCIENCE.md §5: 512 steps
    for bad, words in (({"units": 0}, "count from 1"), ({"units": [2, 2]}, "distinct"), ({"units": [-1]}, ">= 0"),
                       ({"steps": 0}, "greater than or equal to 1"), ({"colour": 1}, "Extra inputs")):  # fmt: skip
        with pytest.raises(ValueError, match=words) as e:
            MetricsSettings(featureviz=bad)
        assert "featureviz." in str(e.value)


def test_trial_key_changes_only_when_the_stage_is_on(setup):
    from shared.dataset_meta import dataset_id

    r, ds = FineTuneRunner(), dataset_id(setup["data"])
    off = r.trial_key(_job(setup, None), ds)
    assert r.trial_key(dataclasses.replace(_job(setup, None), evaluation={**_job(setup, None).evaluation,
                                                                           "featureviz": None}), ds) == off  # fmt: skip
    on = r.trial_key(_job(setup, FV), ds)
    assert on != off and r.trial_key(_job(setup, {**FV, "steps": 9}), ds) != on
    assert r.trial_key(_job(setup, {**FV, "batch_units": 1}), ds) == on  # an execution setting
    assert r.attack_key(_job(setup, FV), ds) == r.attack_key(_job(setup, None), ds)


def test_stage_renders_compares_pictures_and_reuses_theta0(setup):
    st, mres = setup["store"], setup["mres"]
    job = _job(setup, FV)
    res = featureviz_stage.run_stage(job, st, "attack-a", setup["finals"][0], mres)
    assert res.rendered == 4  # 2 units on θ0 and on θ
    for name in ("fv_similarity", "conv5.fv_similarity", "conv5.fv_act_init", "conv5.fv_act_final"):
        assert np.isfinite(res.final[name]), name
    assert -1.0 <= res.final["fv_similarity"] <= 1.0
    names = [n for _, n in res.artifacts]
    assert names == ["conv5_val.png", "conv5_val.pdf"]  # one picture per (layer, split)
    png, pdf = (store.read_bytes(uri) for uri, _ in res.artifacts)
    assert pdf[:5] == b"%PDF-"
    # 6 columns (top-5 natural + the synthetic image), 2 rows per unit: the grid's figure size in inches
    w, h = Image.open(io.BytesIO(png)).size
    assert (w, h) == (round(PNG_DPI * (1.3 * 6 + 1.2)), round(PNG_DPI * (1.3 * 2 * 2 + 0.9)))
    theta0 = FeatureVizSpec("alexnet_mini", setup["init"], "conv5", (1,), model_key="v0", steps=8)
    made = store.read_manifest(featureviz_dir(st, theta0.key()))
    # a second attack of the variant: θ0's renders are reused, only θ's are made
    other = featureviz_stage.run_stage(_job(setup, FV, "push-up"), st, "attack-b", setup["finals"][1], mres)
    assert other.rendered == 2 and store.read_manifest(featureviz_dir(st, theta0.key())) == made
    assert other.final["conv5.fv_act_init"] == pytest.approx(res.final["conv5.fv_act_init"])
    # a rerun is the committed stage; the outcome carries the metrics and the pictures
    again = featureviz_stage.run_stage(job, st, "attack-a", setup["finals"][0], mres)
    assert again.rendered == 0 and again.final == res.final
    assert featureviz_stage.committed_stage(job, st, "attack-a", mres).final == res.final
    out = FineTuneRunner()._outcome(job, "attack-a", setup["finals"][0], {}, mres, again)
    assert out.final["fv_similarity"] == res.final["fv_similarity"]
    assert {"featureviz_conv5_val.png", "featureviz_conv5_val.pdf"} <= {n for _, n in out.artifacts}


def test_combined_rows_put_the_synthetic_image_after_the_natural_ones():
    """Per unit a θ0 row and a θ row: n natural cells (blank where a unit has none), then its synthetic image."""
    from jobs.featureviz import comparison_rows
    from shared.featureviz import Rendering, UnitComparison
    from shared.grid import GridRow

    imgs = [torch.full((2, 3, 4, 4), v) for v in (0.2, 0.8)]
    before, after = (Rendering("conv5", [1, 3], im, torch.zeros(2), torch.zeros(2), 0.0) for im in imgs)
    one = np.array([1.0, 2.0])
    cmp = UnitComparison("conv5", [1, 3], one, 2 * one, one, one, np.array([0.5, 0.25]), {})
    natural = {
        1: (GridRow("unit 1\nbefore", [Image.new("RGB", (4, 4))] * 6, ["nat"] * 6), GridRow("after", [], []))
    }
    rows = comparison_rows(before, after, cmp, natural, n=5)
    assert [r.title for r in rows] == ["unit 1\nbefore", "after", "unit 3\nbefore", "after"]
    assert all(len(r.images) == len(r.captions) == len(r.marked) == 6 for r in rows)
    assert rows[0].captions[:5] == ["nat"] * 5 and rows[0].captions[5] == "synthetic θ0\nact 1"
    assert rows[1].images[:5] == [None] * 5 and rows[3].captions[5] == "synthetic θ\nact 4, cos 0.25"
    assert np.asarray(rows[1].images[5]).mean() == pytest.approx(0.8 * 255, abs=1)  # θ's image on the θ row


def test_a_count_picks_the_alive_units_with_the_highest_clip_delta(setup):
    job = _job(setup, {**FV, "units": 2})
    split, _, units = featureviz_stage._units(job, "conv5", setup["mres"], 2)
    assert split == "val" and units == [3, 5]  # unit 1 (CLIP-δ 0.9) died: its top-k is arbitrary


def test_plan_cost_counts_the_renders():
    """steps x units x layers x 2 models per trial, costed like training images (orchestrator.estimate)."""
    from orchestrator.estimate import cost_of, featureviz_seconds
    from orchestrator.spec.schema import FeatureVizSettings

    assert featureviz_seconds(None, "alexnet", ("conv5",)) == 0.0
    fv = FeatureVizSettings(units=[1, 2, 3], steps=100)
    want = 2 * 100 * 3 * 2 / cost_of("alexnet").train
    assert featureviz_seconds(fv, "alexnet", ("conv4", "conv5")) == pytest.approx(want)
