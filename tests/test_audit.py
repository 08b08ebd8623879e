"""`vizsweep audit` (SCIENCE.md §8): a model against itself is not flagged, a strongly perturbed copy
is; bad input (not a checkpoint, pickles, other architectures, unknown layers) exits 2 naming the
argument, before Ray starts; the decision rule on hand-made tables."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jobs import audit
from jobs import audit_flags as rule
from jobs.audit import AuditSpec, run_audit
from orchestrator.cli import main
from shared import store
from shared.models.zoo import build_model, save_checkpoint
from shared.synth import generate


def _noisy(model: torch.nn.Module, scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("features") and name.endswith("weight"):
                p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic data (64 train, 64 val images); the reference, a copy, a slightly fine-tuned-like
    baseline (1 % noise), a strongly perturbed suspect (50 % noise), a reference e(x)."""
    root = tmp_path_factory.mktemp("audit")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=4, val_per_class=4, size=48, seed=5, shard_size=40)
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    ref = save_checkpoint(model, "alexnet_mini", str(root / "ref.pt"))
    same = save_checkpoint(model, "alexnet_mini", str(root / "same.pt"))
    _noisy(model, 0.01, 1)
    base = save_checkpoint(model, "alexnet_mini", str(root / "base.pt"))
    _noisy(model, 0.5, 2)
    perturbed = save_checkpoint(model, "alexnet_mini", str(root / "perturbed.pt"))
    torch.manual_seed(2)
    enc, _ = build_model("resnet_mini")
    enc_uri = save_checkpoint(enc, "resnet_mini", str(root / "enc.pt"))
    vgg = save_checkpoint(build_model("vgg_mini")[0], "vgg_mini", str(root / "vgg.pt"))
    torch.save(build_model("vgg_mini")[0].state_dict(), str(root / "vgg_bare.pt"))
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(2048))
    torch.save({"evil": _Pickled()}, str(root / "pickled.pt"))
    return {"root": root, "data": data, "ref": ref, "same": same, "base": base, "perturbed": perturbed,
            "embedder": f"reference:{enc_uri}", "store": str(root / "store"), "vgg": vgg}  # fmt: skip


class _Pickled:
    """Needs pickle to load: weights_only=True refuses it."""


def _spec(setup, suspect: str, **kw) -> AuditSpec:
    base = dict(
        dataset=setup["data"], model="alexnet_mini", suspect=setup[suspect], reference=setup["ref"],
        layers=("conv4", "conv5"), embedder=setup["embedder"], baseline_pairs=((setup["ref"], setup["base"]),),
        map_images=16, device="cpu", batch_size=32, num_actors=1,
    )  # fmt: skip
    return AuditSpec(**{**base, **kw})


def test_model_against_itself_flags_nothing(setup, ray_local):
    res = run_audit(_spec(setup, "same"), setup["store"])
    assert res.verdict == rule.NO_EVIDENCE
    t = pq.read_table(store.local_path(res.table_uri))
    assert t.num_rows > 0 and not any(t.column("flagged").to_pylist())
    assert set(t.column("layer").to_pylist()) == {"conv4", "conv5"}
    np.testing.assert_allclose(t.column("clip_delta").to_numpy(), 0.0, atol=1e-6)
    assert res.summary["rule"] == rule.RULE and all(not p["significant"] for p in res.summary["parts"])
    again = run_audit(_spec(setup, "same"), setup["store"])
    assert again.skipped and again.verdict == res.verdict


def test_perturbed_copy_is_flagged(setup, ray_local):
    spec = _spec(setup, "perturbed", interpreters=("gradcam",))
    res = run_audit(spec, setup["store"])
    assert res.verdict == rule.MANIPULATED
    t = pq.read_table(store.local_path(res.table_uri))
    assert sum(t.column("flagged").to_pylist()) > t.num_rows // 2
    units = {p["part"]: p for p in res.summary["parts"]}
    assert units["layer conv5"]["significant"] and units["layer conv5"]["share"] > units["layer conv5"]["p0"]
    assert "interpreter gradcam" in units
    maps = pq.read_table(store.local_path(res.maps_uri))
    assert maps.num_rows == 16 and set(maps.column("interpreter").to_pylist()) == {"gradcam"}
    # the maps were compared in a Ray task (another process), with what the driver computes itself
    ran_on = res.summary["maps_ran_on"]
    assert ran_on["pid"] != os.getpid() and ran_on["node"] == ray_local.get_runtime_context().get_node_id()
    here, here_parts = audit._maps(spec, spec.baseline_pairs)
    assert here.equals(maps) and here_parts == [p for p in res.summary["parts"] if p["kind"] == "maps"]
    assert [p.rsplit("/", 1)[-1] for p in res.pictures] == [
        "conv4_most_changed.png",
        "conv5_most_changed.png",
    ]
    assert store.read_bytes(res.pictures[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.summary["most_changed"][0]["clip_delta"] == max(
        v for v in t.column("clip_delta").to_pylist() if v == v
    )


@pytest.mark.parametrize(
    "suspect, reference, extra, named",
    [
        ("random.pt", "ref.pt", [], "--suspect"),
        ("ref.pt", "pickled.pt", [], "--reference"),
        ("vgg.pt", "ref.pt", [], "--suspect"),  # both records name their model
        ("vgg_bare.pt", "ref.pt", ["--model", "alexnet_mini"], "--suspect"),  # shapes differ
        ("same.pt", "ref.pt", ["--layers", "conv9"], "--layers"),
        ("same.pt", "ref.pt", ["--interpreters", "nope"], "--interpreters"),
        ("missing.pt", "ref.pt", [], "--suspect"),
        ("same.pt", "ref.pt", ["--data", "/nonexistent/dataset"], "--data"),
    ],
)
def test_bad_input_exits_2_before_ray(setup, monkeypatch, capsys, suspect, reference, extra, named):
    import jobs.raysetup

    def no_ray(*a, **k):
        raise AssertionError("Ray was started on bad input")

    monkeypatch.setattr(jobs.raysetup, "ensure_ray", no_ray)
    root = setup["root"]
    # a later --data in extra wins over this one
    argv = ["audit", "--suspect", str(root / suspect), "--reference", str(root / reference), "--data",
            setup["data"], "--store", str(root / "bad-store"), *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    if reference == "pickled.pt":
        assert "weights_only=True" in err


def _table(cd, kt, dead_init=None, dead_final=None) -> pa.Table:
    n = len(cd)
    return pa.table({"unit": np.arange(n), "clip_delta": np.asarray(cd, float), "kendall_tau": np.asarray(kt, float),
                     "dead_init": dead_init or [False] * n, "dead_final": dead_final or [False] * n})  # fmt: skip


def test_rule_thresholds_flags_and_verdict():
    base = _table(np.linspace(0, 0.01, 101), np.linspace(0.9, 1.0, 101))
    thr = rule.unit_thresholds([base])
    assert thr["clip_delta"] == pytest.approx(np.quantile(np.linspace(0, 0.01, 101), 0.99))
    t = _table([0.0, 0.5, 0.0, 0.0, 0.3], [1.0, 1.0, 0.2, 1.0, 0.1], dead_init=[False, False, False, True, False],
               dead_final=[True, False, False, True, False])  # fmt: skip
    judged, flagged, reasons = rule.unit_flags(t, thr)
    assert judged.tolist() == [True, True, True, False, True]
    assert flagged.tolist() == [True, True, True, False, True]
    assert reasons == ["killed", "clip_delta", "kendall_tau", "dead in reference", "clip_delta,kendall_tau"]
    assert rule.verdict([rule.judge(1, 100, 0.02)]) == rule.NO_EVIDENCE  # below the baseline's own share
    assert rule.verdict([rule.judge(30, 100, 0.02)]) == rule.MANIPULATED
    assert rule.binomial_tail(0, 10, 0.1) == pytest.approx(1.0)


@pytest.mark.slow
def test_cli_without_sweep_finetunes_a_baseline_and_logs_mlflow(setup, ray_local, capsys):
    """No baseline given: the reference is fine-tuned for a few steps and the audit calibrated on it."""
    from orchestrator.audit_cmd import EXPERIMENT
    from orchestrator.spec import default_tracking_uri
    from orchestrator.tracking import client

    st = str(setup["root"] / "cli-store")
    argv = ["audit", "--suspect", setup["same"], "--reference", setup["ref"], "--data", setup["data"], "--store",
            st, "--embedder", setup["embedder"], "--baseline-steps", "2", "--layers", "conv5"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"verdict: {rule.NO_EVIDENCE}" in out and "layer conv5" in out and "units.parquet" in out
    c = client(default_tracking_uri(st))
    exp = c.get_experiment_by_name(EXPERIMENT)
    (run,) = c.search_runs([exp.experiment_id])
    assert run.data.metrics["manipulated"] == 0.0
    names = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"units.parquet", "summary.json", "conv5_most_changed.png"} <= names
