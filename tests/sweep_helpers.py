"""What the sweep test modules share: a tiny sweep spec and readers of its MLflow runs."""

from __future__ import annotations

from pathlib import Path

from shared.attacks.featureviz import FeatureViz

# Long trials on a weak tiny model can break the accuracy budget (α at its floor, the drop still
# over 0.5 pp) and be stopped by the controller; tests about resuming must not depend on that.
NO_BUDGET = {"max_drop_pp": 100.0}


def tiny_spec(root: Path, name: str, **over) -> dict:
    """A sweep that runs in about a minute on 2 cores (tiny synthetic set, a few steps per trial)."""
    training = {"lr": 3e-4, "batch_size": 32, "epochs": 1, "max_steps": 6, "evals_per_epoch": 4,
                "eval_images": 64}  # fmt: skip
    training.update(over.pop("training", {}))
    attacks = over.pop("attacks", [{"name": "finetune"}, {"name": "push-down"}])
    small = {"k": 5, "decoy_images": 10}  # the thesis family's settings, small
    over["attacks"] = [{**small, **a} if a["name"] in FeatureViz.attacks else a for a in attacks]
    spec = {
        "name": name,
        "store": str(root / "store"),
        "dataset": {
            "uri": str(root / "data"),
            "synth": {"classes": 16, "train_per_class": 16, "val_per_class": 6, "size": 64},
        },  # fmt: skip
        "models": [{"name": "alexnet_mini", "weights": "pretrain"}],
        "layers": ["conv5"],
        "attacks": [{"name": "finetune"}, {"name": "push-down"}],
        "training": training,
        # no before/after pictures (seconds of drawing per trial) but in the tests that look at them
        "metrics": {"embedder": "reference", "k": 5, "tau_images": 96, "picture_units": 0},
        "max_failures": 2,
    }
    spec.update(over)
    return spec


def sweep_runs(tracking_uri: str, sweep_id: str):
    from orchestrator.tracking import find_child_runs

    return find_child_runs(tracking_uri, sweep_id)


def _step_lists(tracking_uri: str, run_id: str) -> dict[str, list[int]]:
    from orchestrator.tracking import client

    c = client(tracking_uri)
    out = {}
    for key in ("attack_loss", "eval_acc", "alpha"):
        out[key] = [m.step for m in c.get_metric_history(run_id, key)]
    return out


def assert_no_duplicate_steps(tracking_uri: str, run) -> None:
    for key, steps in _step_lists(tracking_uri, run.info.run_id).items():
        assert steps, f"{run.info.run_name}: no {key} history"
        assert len(steps) == len(set(steps)), (
            f"{run.info.run_name}: duplicated steps in {key}: {sorted(steps)}"
        )


def client_of(res):
    from orchestrator.tracking import client

    return client(res.tracking_uri)
