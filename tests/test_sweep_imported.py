"""A sweep on an imported ILSVRC-2012 tree: one trial on its own dataset and store.

Its own module, so that ``make test``'s other worker runs it while the sweep module (one long
module on one worker, tests/conftest.py) runs; one trial next to the sweep module's sweeps
costs little, unlike two multi-trial sweeps at once."""

from __future__ import annotations

import pytest

from orchestrator.spec import load_spec
from tests.sweep_helpers import NO_BUDGET, sweep_runs, tiny_spec

pytestmark = pytest.mark.slow


def test_a_sweep_runs_on_an_imported_ilsvrc_tree(tmp_path):
    """ILSVRC-2012 layout (train/ and val/ class folders of JPEGs) -> import-imagenet -> a sweep.
    The base model is a checkpoint file (random init), as a user's own model would be: the sweep
    pretrains nothing on the imported copy."""
    import torch

    from orchestrator.cli import main
    from orchestrator.sweep import launch
    from shared.models import build_model, save_checkpoint
    from shared.synth import generate

    generate(str(tmp_path / "raw"), classes=16, train_per_class=16, val_per_class=6, size=64)
    src, dest = tmp_path / "raw" / "folder", tmp_path / "imagenet"
    assert sorted(p.name for p in src.iterdir()) == ["train", "val"]
    assert main(["data", "import-imagenet", str(src), str(dest), "--split", "both"]) == 0
    torch.manual_seed(0)
    weights = save_checkpoint(
        build_model("alexnet_mini", num_classes=16)[0], "alexnet_mini", str(tmp_path / "m.pt")
    )
    raw = tiny_spec(tmp_path, "imported", attacks=[{"name": "finetune"}], alpha=NO_BUDGET)
    raw["dataset"] = {"uri": str(dest)}
    raw["models"] = [{"name": "alexnet_mini", "weights": weights}]
    res = launch(load_spec(raw), quiet=True)
    assert res.failed == [] and res.trained == 1
    (run,) = sweep_runs(res.tracking_uri, res.sweep_id)
    assert run.info.status == "FINISHED" and "kendall_tau" in run.data.metrics
