"""The paper sweeps (sweeps/*.yaml) and ``vizsweep plan`` (orchestrator/estimate.py): file-only, no Ray."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from orchestrator import estimate
from orchestrator.cli import main
from orchestrator.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "sweeps" / "paper-alexnet.yaml"
PUSHUP = ROOT / "sweeps" / "paper-alexnet-pushup.yaml"
PRUNING = ROOT / "sweeps" / "paper-pruning.yaml"
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
JSON_KEYS = {
    "spec",
    "name",
    "assumed",
    "assumptions",
    "dataset",
    "layers",
    "trials",
    "stages",
    "totals",
    "warnings",
}


def _plan(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["plan", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("path", [PAPER, PUSHUP, PRUNING], ids=lambda p: p.name)
def test_paper_sweeps_load(path):
    spec = load_spec(path)  # file-only checks
    assert spec.store == "s3://YOUR-BUCKET/vizsweep" and spec.dataset.uri == "s3://YOUR-BUCKET/imagenet"
    assert spec.tracking_uri == "http://HEAD-PRIVATE-IP:5000"
    assert [(m.name, m.weights) for m in spec.models] == [("alexnet", "IMAGENET1K_V1")]
    t = spec.training  # SCIENCE.md §2 thesis defaults
    assert (t.lr, t.batch_size, t.epochs, t.evals_per_epoch) == (1e-5, 256, 5, 10)
    for a in spec.attacks:  # the family's defaults are the thesis's
        assert (a.k, a.scale, a.decoy_class, a.decoy_images) == (10, "unit", 1, 100)
    assert (spec.alpha.alpha0, spec.alpha.alpha_max, spec.alpha.max_drop_pp) == (0.1, 0.95, 0.5)
    m = spec.metrics
    assert (m.embedder, m.k, m.tau_images) == ("open_clip:ViT-B-32:openai", 10, 10_000)
    assert spec.resources.gpus_per_trial == 1 and spec.resources.cpus_per_trial <= 4  # fits a g5.xlarge


def test_paper_alexnet_rows_are_table_3_1():
    """paper-alexnet + paper-alexnet-pushup = the seven AlexNet rows of Table 3.1, nothing more."""
    rows = set()
    for path in (PAPER, PUSHUP):
        spec = load_spec(path)
        assert [a.scope for a in spec.attacks] == ["layer"] * len(spec.attacks)
        rows |= {(a.name, layer) for a in spec.attacks for layer in spec.layers}
        assert spec.trial_count() == len(spec.attacks) * len(spec.layers)
    want = {("push-down", f"conv{i}") for i in range(1, 6)} | {("finetune", "conv5"), ("push-up", "conv5")}
    assert rows == want
    a, b = (load_spec(p).to_dict() for p in (PAPER, PUSHUP))
    for key in ("store", "dataset", "models", "training", "alpha", "metrics", "pruning", "seeds"):
        assert a[key] == b[key], key  # shared stages get the same content keys


def test_paper_pruning_tables_c_to_f():
    spec = load_spec(PRUNING)
    assert spec.layers == ("conv5",) and {a.name for a in spec.attacks} == {"push-down", "push-up"}
    by = {}
    for p in spec.pruning:
        by.setdefault((p.method, p.priority if p.method == "group" else ""), []).append(p)
        if p.method != "none":  # SCIENCE.md §4: Adam 1e-5 (x0.1 from half-way), 20 epochs
            assert (p.epochs, p.lr) == (20, 1e-5)
    rates = [0.125 * i for i in range(1, 8)]  # 12.5 % … 87.5 %
    assert [p.rate for p in by[("norm", "")]] == rates
    assert [p.rate for p in by[("group", "filter")]] == rates
    assert [p.rate for p in by[("group", "weight")]] == rates
    assert [(p.count, p.layer) for p in by[("vulnerability", "")]] == [(32 * i, "conv5") for i in range(1, 8)]
    assert len(by[("none", "")]) == 1 and spec.trial_count() == 58
    assert load_spec(PAPER).to_dict()["training"] == spec.to_dict()["training"]  # conv5 push-down shared


def test_plan_paper_alexnet(capsys):
    spec = load_spec(PAPER)
    rc, out, _ = _plan(capsys, str(PAPER))
    assert rc == 0
    assert f"trials: {spec.trial_count()} ({spec.trial_formula()})" in out
    assert re.search(r"GPU-hours: [\d,.]+ \(ASSUMED", out)
    assert re.search(r"^attack trials\s+5\s+[\d,.]+\s", out, re.M)
    assert "ImageNet-1k defaults" in out and "1,281,167" in out
    assert "alexnet conv1 64, conv2 192, conv3 384, conv4 256, conv5 256" in out


def test_plan_json_keys(capsys):
    spec = load_spec(PAPER)
    rc, out, _ = _plan(capsys, str(PAPER), "--json")
    assert rc == 0
    d = json.loads(out)
    assert set(d) == JSON_KEYS and d["assumed"] is True
    assert list(d["stages"]) == list(estimate.STAGES)
    for s in d["stages"].values():
        assert set(s) == {"count", "gpu_hours", "storage_bytes", "detail"}
    assert d["trials"]["total"] == spec.trial_count() == sum(d["trials"]["per_attack"].values())
    assert d["trials"]["per_attack"] == {"push-down": 5}
    assert d["stages"]["attack_trials"]["count"] == 5
    assert d["stages"]["initial_tables"]["count"] == 1 * 5 * 2
    assert d["stages"]["final_tables"]["count"] == 5 * 2 and d["stages"]["metrics"]["count"] == 5 * 2
    assert d["dataset"]["train_images"] == 1_281_167 and d["dataset"]["val_images"] == 50_000
    assert d["totals"]["gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in d["stages"].values()))
    assert d["totals"]["gpu_hours"] > 1 and d["totals"]["storage_bytes"] > 10**9
    # the initial tables: (N_t + N_v) rows × (4 J + 40) bytes, summed over conv1..conv5
    units = d["layers"]["alexnet"]
    rows = 1_281_167 + 50_000
    assert d["stages"]["initial_tables"]["storage_bytes"] == sum(rows * (4 * j + 40) for j in units.values())


def test_plan_pruning_counts_and_warnings(capsys):
    rc, out, _ = _plan(capsys, str(PRUNING), "--json")
    d = json.loads(out)
    assert rc == 0 and d["stages"]["pruned_variants"]["count"] == 28
    assert d["stages"]["initial_tables"]["count"] == 29 * 2
    assert "shared" in d["stages"]["pruned_variants"]["detail"]
    assert any("vulnerability pruning's push-down ranking run" in w for w in d["warnings"])
    assert not any("memory" in w for w in d["warnings"])  # jobs.prune streams the train split


def test_plan_quickstart_falls_back_to_synth_sizes(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # ./vizsweep-store/datasets/synthetic-16 does not exist here
    rc, out, _ = _plan(capsys, str(QUICKSTART), "--json")
    assert rc == 0
    d = json.loads(out)
    assert (d["dataset"]["train_images"], d["dataset"]["val_images"]) == (16 * 300, 16 * 50)
    assert "synth" in d["dataset"]["source"] and d["dataset"]["image_kind"] == "small"
    assert d["trials"]["total"] == load_spec(QUICKSTART).trial_count() == 6
    assert d["stages"]["reference_encoder"]["count"] == 1
    rc, out, _ = _plan(capsys, str(QUICKSTART))
    assert rc == 0 and "train 4,800 / val 800" in out and "trials: 6" in out


def test_plan_reads_a_local_manifest_and_options(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "_MANIFEST.json").write_text(json.dumps({"counts": {"train": 1234, "val": 56}, "size": 64}))
    spec = QUICKSTART.read_text().replace("./vizsweep-store/datasets/synthetic-16", str(data))
    path = tmp_path / "s.yaml"
    path.write_text(spec)
    d = json.loads(_plan(capsys, str(path), "--json")[1])
    assert (d["dataset"]["train_images"], d["dataset"]["val_images"]) == (1234, 56)
    assert "manifest" in d["dataset"]["source"]
    d = json.loads(_plan(capsys, str(PAPER), "--json", "--train-images", "1000", "--val-images", "100")[1])
    assert (d["dataset"]["train_images"], d["dataset"]["val_images"]) == (1000, 100)


def test_plan_bad_spec_exits_2(capsys, tmp_path):
    rc, _, err = _plan(capsys, str(tmp_path / "missing.yaml"))
    assert rc == 2 and "no such file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("name: push-up", "name: push-sideways"))
    rc, _, err = _plan(capsys, str(bad))
    assert rc == 2 and "attacks[2].name" in err


def test_costs_doc_matches_the_code():
    """docs/costs.md's table of ASSUMED rates is the one estimate.py uses."""
    text = (ROOT / "docs" / "costs.md").read_text()
    table = dict(
        (m, (float(f), float(t))) for m, f, t in re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \|$", text, re.M)
    )
    assert table == {k: (v.forward, v.train) for k, v in estimate.COSTS.items()}
    assert "ASSUMED" in text


def test_job_constants_match_the_jobs():
    """estimate.py copies a few job settings the spec does not expose; they must stay equal."""
    import dataclasses

    from jobs.attack import AttackSpec
    from jobs.pretrain import PretrainSpec
    from jobs.reference_encoder import REFERENCE_MODEL, REFERENCE_TRAINING

    f = {x.name: x.default for x in dataclasses.fields(AttackSpec)}
    assert (estimate.KEEP_CHECKPOINTS, estimate.CACHE_MB) == (f["keep_checkpoints"], f["cache_mb"])
    assert estimate.PRETRAIN_EPOCHS == PretrainSpec(dataset="/d").epochs  # alexnet_mini's
    assert (estimate.REFERENCE_MODEL, estimate.REFERENCE_EPOCHS) == (
        REFERENCE_MODEL,
        REFERENCE_TRAINING["epochs"],
    )
    for model, units in estimate.STATIC_UNITS.items():  # the fallback table agrees with the meta build
        assert estimate.layer_units(model, tuple(units)) == units
        assert estimate.param_count(model) == estimate.STATIC_PARAMS[model]


def test_plan_imports_neither_ray_nor_mlflow(capsys, monkeypatch):
    for name in ("ray", "mlflow"):  # None in sys.modules: any import of them raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    rc, out, err = _plan(capsys, str(PRUNING))
    assert rc == 0, err
    assert "GPU-hours" in out


@pytest.mark.parametrize("name", ["paper-alexnet", "paper-alexnet-pushup", "paper-pruning"])
def test_paper_sweeps_validate_with_file_checks_on_a_laptop(name, capsys):
    """The cluster's specs name S3 data and GPUs: `validate --spec-only` checks everything the file
    decides; the full `validate` runs on the cluster (RAY_ADDRESS set, data reachable)."""
    from orchestrator.cli import main

    assert main(["validate", "--spec-only", str(ROOT / "sweeps" / f"{name}.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok (file checks only): ")


def test_plan_costs_an_attack_by_its_family():
    """The images a step forwards beside the batch come from the entry's family (extra_images_per_step)."""
    base = load_spec(PAPER).to_dict()
    bigger = {**base, "attacks": [{"name": "push-down", "attack_batch_size": 1024}]}

    def hours(doc):
        return estimate.estimate(load_spec(doc))["stages"]["attack_trials"]["gpu_hours"]

    assert hours(bigger) > hours(base)
