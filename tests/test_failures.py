"""A failed launch is visible: status.json says failed and why, MLflow runs are FAILED, resume is allowed.

No Ray: the launch fails in phase 0 (a damaged dataset shard) or where Ray would start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.spec import load_spec
from shared import store
from shared.synth import generate


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("failures") / "data"
    generate(str(root), classes=16, train_per_class=2, val_per_class=2, size=32, shard_size=16)
    return root


def _spec(root: Path, data: Path, name: str) -> dict:
    return {
        "name": name,
        "store": str(root / "store"),
        "dataset": {"uri": str(data)},
        "models": [{"name": "alexnet_mini", "weights": "pretrain"}],
        "layers": ["conv5"],
        "attacks": [{"name": "finetune", "k": 2}],
        "training": {"batch_size": 8, "epochs": 1, "max_steps": 2, "eval_images": 16},
        "metrics": {"embedder": "reference", "k": 2, "tau_images": 8},
    }


def _status(store_uri: str, sid: str) -> dict:
    return store.read_json(store.join(store_uri, "sweeps", sid, "status.json"))


def test_a_launch_on_a_damaged_shard_is_marked_failed_with_the_file_named(tmp_path, data, capsys):
    import shutil

    from orchestrator.sweep import launch, sweep_id_for
    from shared.integrity import CorruptDataset

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    part = copy / "parquet" / "train" / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:100])  # truncated: pyarrow alone would say "magic bytes"
    spec = load_spec(_spec(tmp_path, copy, "bad-shard"))
    with pytest.raises(CorruptDataset, match="part-00001.parquet: 100 bytes"):
        launch(spec, quiet=True)
    sid = sweep_id_for(spec)
    st = _status(spec.store, sid)
    assert st["state"] == "failed"
    assert st["reason"].startswith("CorruptDataset: corrupt files in ") and "\n" not in st["reason"]
    assert "train/part-00001.parquet" in st["reason"] and "vizsweep data synth --out" in st["reason"]
    capsys.readouterr()
    assert main(["status", "--store", spec.store]) == 0
    out = capsys.readouterr().out
    assert f"{sid:<32} failed" in out and "why: CorruptDataset" in out and "part-00001.parquet" in out
    assert main(["status", sid, "--store", spec.store]) == 0
    out = capsys.readouterr().out
    assert "failed: CorruptDataset" in out and f"vizsweep resume {sid}" in out
    assert main(["verify", "--store", spec.store]) == 1  # the sweep's dataset lies outside the store
    out = capsys.readouterr().out
    assert (
        "corrupt dataset" in out and "part-00001.parquet: 100 bytes" in out and "vizsweep data synth" in out
    )
    assert main(["verify", sid, "--store", spec.store, "--quick"]) == 1  # the stages this sweep uses
    assert "parquet/train/part-00001.parquet: 100 bytes" in capsys.readouterr().out


def test_a_launch_failing_after_mlflow_marks_the_runs_failed_and_resume_is_allowed(
    tmp_path, data, monkeypatch, capsys
):
    import orchestrator.sweep as sweep
    from orchestrator.commands import _refuse_if_driver_alive
    from orchestrator.plan import Prepared, Variant
    from orchestrator.tracking import TrialRun, client, find_child_runs, find_parent_run
    from shared.dataset_meta import dataset_id

    spec = load_spec(_spec(tmp_path, data, "lost-cluster"))
    sid = sweep.sweep_id_for(spec)
    base = Variant("alexnet_mini", str(tmp_path / "w.pt"), "0123456789abcdef", "0123456789abcdef")
    prep = Prepared(str(data), dataset_id(str(data)), (base,), "reference:/nowhere/model.pt")
    monkeypatch.setattr(sweep, "prepare", lambda spec, bar: prep)  # no training in this test
    monkeypatch.setattr(sweep, "plan_trials", lambda spec, prep: [])  # failure marking, not planning

    def lost(*a, **k):  # where Ray would start: a trial's run is already RUNNING
        st = _status(spec.store, sid)
        TrialRun.open(st["tracking_uri"], st["experiment_id"], st["parent_run_id"], "t1", "trial-1", {}, {})
        raise ConnectionError("ray cluster at 10.0.0.9:6379 is gone\n(second line of the message)")

    monkeypatch.setattr(sweep, "ensure_ray", lost)
    with pytest.raises(ConnectionError):
        sweep.launch(spec, quiet=True)
    st = _status(spec.store, sid)
    assert st["state"] == "failed"
    assert (
        st["reason"] == "ConnectionError: ray cluster at 10.0.0.9:6379 is gone (second line of the message)"
    )
    parent = find_parent_run(st["tracking_uri"], sid)
    assert parent.info.status == "FAILED" and parent.data.tags["vizsweep.failure"] == st["reason"]
    children = find_child_runs(st["tracking_uri"], sid)
    assert [c.info.status for c in children] == ["FAILED"]
    assert client(st["tracking_uri"]).get_run(children[0].info.run_id).info.end_time is not None

    # resume of a failed sweep is not refused, even while its old driver's pid is alive
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        d = store.join(spec.store, "sweeps", sid)
        store.write_json(store.join(d, "status.json"), {**st, "driver_pid": other.pid})
        _refuse_if_driver_alive(d)
        store.write_json(store.join(d, "status.json"), {**st, "driver_pid": other.pid, "state": "tables"})
        with pytest.raises(ValueError, match="still being run"):
            _refuse_if_driver_alive(d)  # the check still guards a sweep that is really running
        store.write_json(store.join(d, "status.json"), {**st, "driver_pid": other.pid})
    finally:
        other.communicate(b"")
    with pytest.raises(ConnectionError):  # resume starts the launch again (and fails the same way)
        main(["resume", sid, "--store", spec.store])
    again = _status(spec.store, sid)
    assert again["state"] == "failed" and again["finished"] > st["finished"]
    assert json.loads(json.dumps(again))["reason"] == st["reason"]


def test_deterministic_errors_fail_once_and_infrastructure_faults_are_retried():
    """The rule a trial applies to its error: bad config or data (a retry repeats it) fails the trial
    once; a lost worker, the network or memory is left to Tune's retries."""
    import ray.exceptions as rx

    from orchestrator.failure import is_deterministic

    for exc in (
        ValueError("k=9999 > 256 images"),
        KeyError("conv9"),
        FileNotFoundError("w.pt"),
        TypeError("x"),
    ):
        assert is_deterministic(exc), exc
    wrapped = rx.RayTaskError("attack_trial", "Traceback ...", ValueError("bad")).as_instanceof_cause()
    assert is_deterministic(wrapped)  # a remote function's own error, wrapped by Ray
    lost = rx.RayTaskError("attack_trial", "Traceback ...", rx.ActorDiedError()).as_instanceof_cause()
    for exc in (rx.ActorDiedError(), lost, TimeoutError(), ConnectionResetError(), OSError("EIO"),
                MemoryError(), KeyboardInterrupt()):  # fmt: skip
        assert not is_deterministic(exc), exc
