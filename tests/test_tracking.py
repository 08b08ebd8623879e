"""MLflow tracking: resumable parent/child runs, no credentials in MLflow, the report, a real server and UI."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from urllib.parse import unquote

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import redaction, tracking
from orchestrator.report import COLUMNS, render, report_rows
from orchestrator.spec import default_tracking_uri
from orchestrator.tracking import SweepTracker, TrialRun, compare_url, safe_params

SECRET = "wJalrXUtnFEMI/K7MDENG-topsecret"


@pytest.fixture
def uri(tmp_path) -> str:
    return default_tracking_uri(str(tmp_path / "store"))


def _all_values(run) -> list[str]:
    return [
        *run.data.params.keys(),
        *run.data.params.values(),
        *run.data.tags.keys(),
        *run.data.tags.values(),
    ]


# --------------------------------------------------------------------------- pure functions


def test_default_tracking_uri(tmp_path, monkeypatch):
    assert default_tracking_uri(str(tmp_path / "s")) == f"sqlite:///{tmp_path}/s/mlflow.db"
    assert default_tracking_uri(f"file://{tmp_path}/s/") == f"sqlite:///{tmp_path}/s/mlflow.db"
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri("s3://bucket/store") == f"sqlite:///{tmp_path}/mlflow.db"


def test_redact_and_safe_params():
    assert redaction.redact(f"s3://AKIAKEY:{SECRET}@127.0.0.1:8333/b/k") == "s3://127.0.0.1:8333/b/k"
    assert redaction.redact("http://user:pw@host:5000/x") == "http://host:5000/x"
    assert redaction.redact("s3://bucket/k") == "s3://bucket/k"
    assert redaction.redact("https://h/o?X-Amz-Signature=abc&v=1") == "https://h/o?X-Amz-Signature=***&v=1"
    p = safe_params(
        {
            "store": f"s3://AKIAKEY:{SECRET}@host/b",
            "aws_secret_access_key": SECRET,
            "s3": {"endpoint": "http://127.0.0.1:8333", "Secret_Key": SECRET, "token": "t"},
            "alpha": {"target": 0.5, "window": [1, 2]},
            "long": "x" * 7000,
            "shards": [f"s3://k:{SECRET}@h/a", "s3://h/b"],
        }
    )
    assert p["store"] == "s3://host/b"
    assert p["s3.endpoint"] == "http://127.0.0.1:8333"
    assert p["alpha.target"] == "0.5" and p["alpha.window"] == "[1, 2]"
    assert len(p["long"]) == 6000
    assert "aws_secret_access_key" not in p and "s3.Secret_Key" not in p and "s3.token" not in p
    assert not any(SECRET in v or "AKIAKEY" in v for v in p.values())


def test_compare_url():
    url = compare_url("http://127.0.0.1:5000/", "3", ["a1", "b2"])
    assert url.startswith("http://127.0.0.1:5000/#/compare-runs?runs=")
    assert unquote(url).endswith('runs=["a1","b2"]&experiments=["3"]')
    assert '"' not in url and "[" not in url


# --------------------------------------------------------------------------- runs in sqlite


def test_parent_is_idempotent(uri):
    t = SweepTracker(uri, "paper-alexnet")
    first = t.parent("sw-1", {"spec": {"seed": 0}}, {"owner": "me"})
    assert t.parent("sw-1", {"spec": {"seed": 0}}, {"owner": "me"}) == first
    # a new tracker (a resumed launcher) finds the same parent; another sweep gets its own
    again = SweepTracker(uri, "paper-alexnet")
    assert again.experiment_id == t.experiment_id
    assert again.parent("sw-1", {}, {}) == first
    assert again.parent("sw-2", {}, {}) != first
    t.finish_parent("sw-1", "FINISHED")
    client = MlflowClient(uri)
    assert client.get_run(first).info.status == "FINISHED"
    assert t.parent("sw-1", {}, {}) == first  # resume: RUNNING again
    assert client.get_run(first).info.status == "RUNNING"
    assert client.get_run(first).data.params == {"spec.seed": "0"}


def test_trial_run_reopens_and_skips_logged_steps(uri):
    t = SweepTracker(uri, "exp")
    parent = t.parent("sw", {}, {})
    run = TrialRun.open(uri, t.experiment_id, parent, "trial-a", "alexnet/conv5/push-up", {"lr": 1e-5}, {})
    assert run.last_step == -1
    for step in range(4):
        assert run.log_step({"acc_drop": step / 10, "alpha": 0.5, "note": "text is not a metric"}, step)
    run.log_final({"clip_delta": 0.25, "acc": 90.0, "missing": None})
    run.finish("FAILED")  # the attempt died after step 3

    # trials carry the sweep id too (sweep.py tags them): that must not make them look like the parent
    other = TrialRun.open(uri, t.experiment_id, parent, "trial-b", "b", {}, {"vizsweep.sweep_id": "sw"})
    assert t.parent("sw", {}, {}) == parent
    again = TrialRun.open(uri, t.experiment_id, parent, "trial-a", "alexnet/conv5/push-up", {"lr": 1e-5}, {})
    assert again.run_id == run.run_id != other.run_id
    assert again.last_step == 3  # final metrics (step 0) do not count as steps
    client = MlflowClient(uri)
    assert client.get_run(again.run_id).info.status == "RUNNING"
    # the retry restarts from a checkpoint at step 2: steps 2 and 3 are not logged twice
    assert not again.log_step({"acc_drop": 9.0}, 2)
    assert not again.log_step({"acc_drop": 9.0}, 3)
    assert again.log_step({"acc_drop": 0.4, "alpha": 0.6}, 4)
    again.finish()
    history = client.get_metric_history(run.run_id, "acc_drop")
    steps = [m.step for m in history]
    assert sorted(steps) == [0, 1, 2, 3, 4] and len(set(steps)) == len(steps)
    assert {m.step: m.value for m in history}[3] == pytest.approx(0.3)
    assert len(client.get_metric_history(run.run_id, "alpha")) == 5
    assert "note" not in client.get_run(run.run_id).data.metrics
    children = tracking.find_child_runs(uri, "sw")
    assert [r.info.run_id for r in children] == [run.run_id, other.run_id]
    assert children[0].data.tags["mlflow.parentRunId"] == parent


def test_trial_run_artifact_at_root(uri, tmp_path):
    t = SweepTracker(uri, "exp")
    run = TrialRun.open(uri, t.experiment_id, t.parent("sw", {}, {}), "k", "n", {}, {})
    f = tmp_path / "topk_before_after.png"
    f.write_bytes(b"png")
    run.log_artifact(f)
    assert [a.path for a in MlflowClient(uri).list_artifacts(run.run_id)] == ["topk_before_after.png"]
    # beside the database, not in whatever cwd the trial had
    art = Path(uri[len("sqlite:///") :]).parent / "mlartifacts"
    assert list(art.rglob("topk_before_after.png"))


def test_credentials_never_reach_mlflow(uri):
    t = SweepTracker(uri, "exp")
    leaky = {
        "store": f"s3://AKIAKEY:{SECRET}@127.0.0.1:8333/bucket/store",
        "aws_secret_access_key": SECRET,
        "mlflow": {"tracking_uri": f"http://user:{SECRET}@host:5000"},
    }
    parent = t.parent("sw", leaky, leaky)
    run = TrialRun.open(uri, t.experiment_id, parent, "k", "n", leaky, leaky)
    run.set_tags({"store": leaky["store"], "password": SECRET})
    client = MlflowClient(uri)
    for run_id in (parent, run.run_id):
        values = _all_values(client.get_run(run_id))
        assert not [v for v in values if SECRET in v or "AKIAKEY" in v]
        assert client.get_run(run_id).data.params["store"] == "s3://127.0.0.1:8333/bucket/store"


# --------------------------------------------------------------------------- the report

RUNS = [  # (model, method, rate, layer, attack) -> final metrics; deliberately out of order
    (("alexnet", "l1", "0.5", "conv5", "push-up"), {"clip_delta": 0.5, "kendall_tau": 0.125, "acc": 80.0}),
    (
        ("alexnet", "l1", "0.5", "conv5", "finetune"),
        {"clip_delta": 0.0625, "kendall_tau": 0.875, "acc": 82.5},
    ),
    (("alexnet", "l1", "0.5", "conv5", "push-down"), {"clip_delta": 0.25, "kendall_tau": 0.5, "acc": 81.0}),
    (("alexnet", "l1", "0.25", "conv5", "push-up"), {"clip_delta": 0.75, "kendall_tau": -0.25, "acc": 84.0}),
]
FULL = {"clip_w": 0.375, "kendall_tau_w": 0.625, "topk_overlap": 0.5, "delta_acc": -1.5, "extra": 7.0}


def _report_sweep(uri: str) -> None:
    t = SweepTracker(uri, "exp")
    parent = t.parent("sw-report", {}, {})
    for i, ((model, method, rate, layer, attack), final) in enumerate(RUNS):
        params = {
            "model": model,
            "prune_method": method,
            "prune_rate": rate,
            "layer": layer,
            "attack": attack,
        }
        run = TrialRun.open(
            uri, t.experiment_id, parent, f"t{i}", f"{attack}-{rate}", {**params, "lr": 1}, {}
        )
        run.log_step({"acc_drop": 1.0}, 0)
        run.log_final({**final, **(FULL if i else {})})  # run 0 lacks most metrics
        run.finish()
    unfinished = TrialRun.open(uri, t.experiment_id, parent, "t9", "running", {"model": "zz"}, {})
    unfinished.log_final({"acc": 1.0})  # RUNNING: not in the report


def test_report_rows_and_formats(uri):
    _report_sweep(uri)
    rows = report_rows(uri, "sw-report")
    assert [(r["prune_rate"], r["attack"]) for r in rows] == [
        (0.25, "push-up"), (0.5, "finetune"), (0.5, "push-down"), (0.5, "push-up"),
    ]  # fmt: skip
    assert all(list(r)[: len(COLUMNS)] == list(COLUMNS) for r in rows)
    assert rows[1]["acc_init"] is None and rows[1]["fine_tuned_acc"] is None  # extras: the pruning tables
    # runs logged before the splits were recorded: one row each, split None
    assert {k: rows[1][k] for k in COLUMNS} == {
        "family": None,
        "model": "alexnet", "prune_method": "l1", "prune_rate": 0.5, "layer": "conv5", "attack": "finetune",
        "seed": None, "split": None, "clip_delta": 0.0625, "kendall_tau": 0.875, "clip_w": 0.375,
        "kendall_tau_w": 0.625, "topk_overlap": 0.5, "acc": 82.5, "delta_acc": -1.5, "units_dead_init": None,
        "units_killed": None, "decoy_top5": None, "alpha_final": None, "steps": None, "run_id": rows[1]["run_id"],
    }  # fmt: skip
    assert len({r["run_id"] for r in rows}) == 4  # each row names its MLflow run
    assert rows[3]["clip_w"] is None and rows[3]["delta_acc"] is None  # the run without them

    md = render(rows, "md").splitlines()
    assert md[0] == (
        "| Model | Prune | Layer | Attack | Seed | Split | CLIP-δ | Kendall-τ | CLIP-W | Kτ-W | top-k overlap "
        "| Acc % | ΔAcc pp | Dead | Killed | α end | Steps | MLflow run |"
    )
    assert md[3] == (
        "| alexnet | l1 0.5 | conv5 | finetune | — | — | 0.062 | 0.875 | 0.375 | 0.625 | 0.500 | 82.500 "
        f"| -1.500 | — | — | — | — | {rows[1]['run_id']} |"
    )
    assert md[5] == (
        "| alexnet | l1 0.5 | conv5 | push-up | — | — | 0.500 | 0.125 | — | — | — | 80.000 | — | — | — | — | — "
        f"| {rows[3]['run_id']} |"
    )
    assert len(md) == 2 + 4

    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert list(parsed[0]) == list(COLUMNS)
    assert parsed[2]["attack"] == "push-down" and float(parsed[2]["clip_delta"]) == 0.25
    assert parsed[3]["clip_w"] == ""

    doc = json.loads(render(rows, "json", sweep="sw-report"))
    assert doc["sweep"] == "sw-report" and doc["rows"] == [{k: r[k] for k in COLUMNS} for r in rows]
    with pytest.raises(ValueError, match="report format"):
        render(rows, "xlsx")


def _layer_split(layer: str, split: str, means: dict[str, float]):
    from jobs.metrics import LayerSplitMetrics

    return LayerSplitMetrics(layer, split, "u", "t", None, [], means, 80.0, 81.0, -1.0, "k", True)


def _mres(decoy: bool):
    """Metrics of a two-layer trial on both splits, as the metrics stage returns them."""
    from jobs.metrics import MetricsResult

    per = {}
    for i, ly in enumerate(("conv4", "conv5")):
        for j, sp in enumerate(("train", "val")):
            means = {"clip_delta": 0.25 * (i + 1) + j, "kendall_tau": 0.5, "clip_w": 1.0, "kendall_tau_w": 0.5,
                     "topk_overlap": 0.125 * (j + 1), "units_dead_init": float(i), "units_killed": 2.0 + j}  # fmt: skip
            if decoy:
                means["decoy_top5"] = 0.5 + 0.25 * i - 0.5 * j
            per[(ly, sp)] = _layer_split(ly, sp, means)
    return MetricsResult(per, {}, True, 0.0)


def test_report_rows_name_the_split_both_splits_are_rows(uri):
    from types import SimpleNamespace

    from jobs.runners import final_metrics

    plan = SimpleNamespace(layers=("conv4", "conv5"), train_split="train", val_split="val")
    final = final_metrics(plan, [{"step": 3, "alpha": 0.25}], _mres(decoy=True))
    assert final["train.clip_delta"] == final["clip_delta"] == 0.375  # layer mean; unprefixed: train
    assert final["val.clip_delta"] == 1.375 and final["val.topk_overlap"] == 0.25
    assert final["train.units_killed"] == 4.0 and final["val.units_killed"] == 6.0  # summed over layers
    assert final["train.units_dead_init"] == 1.0 and final["conv5.val.units_killed"] == 3.0
    assert final["train.decoy_top5"] == final["decoy_top5"] == 0.625 and final["val.decoy_top5"] == 0.125
    t = SweepTracker(uri, "exp")
    parent = t.parent("sw-split", {}, {})
    for i, (attack, decoy) in enumerate((("push-up", True), ("push-down", False))):
        params = {"model": "m", "prune_method": "none", "prune_rate": "0.0", "layer": "conv4+conv5",
                  "attack": attack}  # fmt: skip
        run = TrialRun.open(uri, t.experiment_id, parent, f"t{i}", attack, params, {})
        run.log_final(final_metrics(plan, [], _mres(decoy)))
        run.finish()
    rows = report_rows(uri, "sw-split")
    assert [(r["split"], r["attack"]) for r in rows] == [
        ("train", "push-down"), ("train", "push-up"), ("val", "push-down"), ("val", "push-up"),
    ]  # fmt: skip
    assert rows[1]["units_killed"] == 4 and rows[3]["units_killed"] == 6 and rows[3]["units_dead_init"] == 1
    assert rows[1]["decoy_top5"] == 0.625 and rows[3]["decoy_top5"] == 0.125 and rows[0]["decoy_top5"] is None
    assert rows[2]["clip_delta"] == 1.375 and rows[2]["acc"] == 80.0 and rows[2]["delta_acc"] == -1.0

    md = render(rows, "md").splitlines()
    assert md[0].startswith("| Model | Prune | Layer | Attack | Seed | Split | CLIP-δ |")
    assert md[0].endswith("| ΔAcc pp | Dead | Killed | Decoy top-5 | α end | Steps | MLflow run |")
    assert md[2] == (
        "| m | none 0 | conv4+conv5 | push-down | — | train | 0.375 | 0.500 | 1.000 | 0.500 | 0.125 "
        f"| 80.000 | -1.000 | 1 | 4 | — | — | — | {rows[0]['run_id']} |"
    )
    assert md[5].startswith("| m | none 0 | conv4+conv5 | push-up | — | val | 1.375 |") and md[5].endswith(
        f"| 1 | 6 | 0.125 | — | — | {rows[3]['run_id']} |"
    )
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert [(p["split"], p["units_killed"], p["decoy_top5"]) for p in parsed] == [
        ("train", "4", ""), ("train", "4", "0.625"), ("val", "6", ""), ("val", "6", "0.125"),
    ]  # fmt: skip
    doc = json.loads(render(rows, "json", sweep="sw-split"))
    assert [(r["split"], r["units_killed"], r["decoy_top5"]) for r in doc["rows"]] == [
        ("train", 4, None), ("train", 4, 0.625), ("val", 6, None), ("val", 6, 0.125),
    ]  # fmt: skip


def test_report_of_unknown_sweep_is_empty(uri):
    SweepTracker(uri, "exp")
    assert report_rows(uri, "nope") == []
    assert render([], "md").count("\n") == 2


# --------------------------------------------------------------------------- a real server, S3 artifacts, a browser


@pytest.mark.slow
def test_server_with_s3_artifacts(mlflow_s3_server, s3_server, tmp_path):
    server = mlflow_s3_server
    t = SweepTracker(server.uri, "s3-artifacts")
    parent = t.parent("sw-s3", {"store": f"s3://k:{SECRET}@h/b"}, {})
    run = TrialRun.open(server.uri, t.experiment_id, parent, "k", "alexnet-push-up", {"layer": "conv5"}, {})
    for step in range(3):
        run.log_step({"acc_drop": float(step)}, step)
    run.log_final({"clip_delta": 0.5, "kendall_tau": 0.25})
    f = tmp_path / "unit_metrics.csv"
    f.write_text("unit,clip_delta\n3,0.5\n")
    run.log_artifact(f)
    run.finish()

    client = MlflowClient(server.uri)
    got = client.get_run(run.run_id)
    assert got.data.metrics["clip_delta"] == 0.5 and got.data.params["layer"] == "conv5"
    assert [m.step for m in client.get_metric_history(run.run_id, "acc_drop")] == [0, 1, 2]
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["unit_metrics.csv"]
    bucket, prefix = server.artifacts_destination[len("s3://") :].split("/", 1)
    keys = [
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    ]
    mine = [k for k in keys if run.run_id in k and k.endswith("/unit_metrics.csv")]
    assert mine, keys
    body = s3_server.client().get_object(Bucket=bucket, Key=mine[0])["Body"].read()
    assert body == f.read_bytes()


@pytest.mark.slow
def test_compare_page_in_chromium(mlflow_s3_server, tmp_path):
    from tests.services import chromium_binary, chromium_dump_dom

    try:
        chromium_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    server = mlflow_s3_server
    t = SweepTracker(server.uri, "compare-page")
    parent = t.parent("sw-ui", {}, {})
    attacks = ["push-up", "push-down"]
    names = [f"alexnet-conv5-{a}" for a in attacks]
    ids = []
    for i, (name, attack) in enumerate(zip(names, attacks)):
        run = TrialRun.open(server.uri, t.experiment_id, parent, name, name, {"attack": attack}, {})
        run.log_final({"clip_delta": 0.1 * (i + 1), "kendall_tau": 0.5 - 0.2 * i})
        run.finish()
        ids.append(run.run_id)

    out = Path(os.environ.get("VIZSWEEP_TEST_ARTIFACTS", tmp_path)) / "compare.png"
    dom = chromium_dump_dom(compare_url(server.uri, t.experiment_id, ids), out_png=out)
    for text in ("clip_delta", "kendall_tau", *names):
        assert text in dom, f"{text!r} missing from the compare page"
    assert out.exists() and out.stat().st_size > 0
