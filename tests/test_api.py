"""The Python API (``import vizsweep``): cheap to import, results as a DataFrame, models loaded back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vizsweep._results import param_value, split_rows

ROOT = Path(__file__).resolve().parents[1]

PARAMS = {"model": "alexnet_mini", "prune_method": "none", "prune_rate": 0.0, "layer": "conv3+conv5",
          "seed": 0, "weights": None}  # fmt: skip


def _final(push: float) -> dict[str, float]:
    return {"clip_delta": push, "kendall_tau": 0.5, "acc": 0.9, "delta_acc": -1.0,
            "conv3.train.clip_delta": push - 0.1, "conv5.train.clip_delta": push + 0.1,
            "conv3.val.clip_delta": 0.2, "conv5.val.clip_delta": 0.4}  # fmt: skip


def test_import_is_cheap():
    code = ("import sys, vizsweep; heavy = [m for m in ('ray', 'mlflow', 'torch', 'pandas', 'pyarrow') "
            "if m in sys.modules]; print(heavy)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("text", "value"), [("3", 3), ("0.5", 0.5), ("None", None), ("True", True), ("conv5", "conv5")]
)
def test_param_value(text, value):
    assert param_value(text) == value and type(param_value(text)) is type(value)


def test_split_rows_average_layers_per_split():
    rows = split_rows("r1", "n1", {"layer": "conv3+conv5"}, _final(1.0))
    assert [r["split"] for r in rows] == ["train", "val"]
    train, val = rows
    assert train["clip_delta"] == pytest.approx(1.0) and val["clip_delta"] == pytest.approx(0.3)
    assert val["conv3.clip_delta"] == 0.2 and val["acc"] == 0.9 and val["run_id"] == "r1"
    assert split_rows("r2", "n2", {"layer": "conv5"}, {"clip_delta": 0.7})[0]["split"] is None


def test_results_and_load_model(tmp_path, monkeypatch):
    import torch

    import vizsweep
    from shared.models.zoo import build_model, save_checkpoint
    from tests.sweep_store import SWEEP, write_sweep

    trained, _ = build_model("alexnet_mini")
    ckpt = save_checkpoint(trained, "alexnet_mini", str(tmp_path / "ck" / "model.pt"))
    pointer = {"model.json": {"model_uri": ckpt, "attack_key": "ak", "model": "alexnet_mini"}}
    store_dir = tmp_path / "store"
    write_sweep(store_dir, [("run-a", {**PARAMS, "attack": "push-down"}, _final(1.0)),
                            ("run-b", {**PARAMS, "attack": "finetune"}, _final(0.1))],
                artifacts={"run-a": pointer})  # fmt: skip
    monkeypatch.setenv("VIZSWEEP_STORE", str(store_dir))
    df = vizsweep.results(SWEEP)
    assert df.shape[0] == 4  # 2 runs x 2 splits
    assert list(df.columns[:3]) == ["run_id", "run_name", "split"]
    assert {"model", "layer", "attack", "clip_delta", "kendall_tau", "seed"} <= set(df.columns)
    # the report's order: the attacked split's block first, the control (finetune) first in each
    assert list(zip(df["split"], df["attack"])) == [
        ("train", "finetune"), ("train", "push-down"), ("val", "finetune"), ("val", "push-down"),
    ]  # fmt: skip
    a = df[(df.run_name == "run-a") & (df.split == "val")].iloc[0]
    assert a["clip_delta"] == pytest.approx(0.3) and a["seed"] == 0 and a["prune_rate"] == 0.0
    assert df.run_id.nunique() == 2
    assert [s["sweep_id"] for s in vizsweep.status()] == [SWEEP]
    with pytest.raises(ValueError, match="no sweep 'nope'.*known: quick-0123abcd"):
        vizsweep.results("nope")
    # load_model: by run name or run id, through the run's model.json pointer
    model, meta = vizsweep.load_model(SWEEP, "run-a")
    assert not model.training and meta["run_name"] == "run-a" and meta["model_uri"] == ckpt
    for k, v in trained.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    run_id = df[df.run_name == "run-a"].run_id.iloc[0]
    assert vizsweep.load_model(SWEEP, run_id)[1]["run_id"] == run_id
    with pytest.raises(ValueError, match="no run 'run-z'.*run-a, run-b"):
        vizsweep.load_model(SWEEP, "run-z")
    with pytest.raises(FileNotFoundError, match="model.json"):
        vizsweep.load_model(SWEEP, "run-b")
