"""The runs table MLflow opens on for a sweep (orchestrator.mlflow_view): columns and grouping."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.mlflow_view import MAX_METRIC_COLUMNS, metric_columns, runs_view_url, view_state


def _run(params: dict, metrics: dict) -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(params=params, metrics=metrics))


FV = {"train.clip_delta": 1.0, "train.kendall_tau": 0.5, "val.clip_delta": 0.9, "val.kendall_tau": 0.6,
      "clip_delta": 1.0, "kendall_tau": 0.5, "delta_acc": -0.4, "conv5.train.clip_delta": 1.0,
      "alpha_wait_s": 0.1, "train_s": 3.0}  # fmt: skip
PARAMS = {"model": "alexnet_mini", "layer": "conv5", "attack": "push-down", "seed": "0", "prune_method": "none",
          "weights": "file:///x", "trial_key": "abc"}  # fmt: skip


def test_first_split_then_run_level_then_other_splits_and_no_internals():
    cols = metric_columns([_run(PARAMS, FV)])
    assert cols[:2] == ["train.clip_delta", "train.kendall_tau"]
    assert cols.index("delta_acc") < cols.index("val.clip_delta") < cols.index("val.kendall_tau")
    # per-split columns replace the run-level copy; per-layer, timing and controller internals stay out
    assert not {"clip_delta", "kendall_tau", "conv5.train.clip_delta", "alpha_wait_s", "train_s"} & set(cols)


def test_a_family_logging_one_value_per_interpreter_gets_a_column_each():
    sal = _run({**PARAMS, "attack": "location"}, {"fsr.gradcam": 0.9, "fsr.lrp": 0.4, "delta_acc": -1.0})
    cols = metric_columns([_run(PARAMS, FV), sal])
    assert {"fsr.gradcam", "fsr.lrp"} <= set(cols) and len(cols) <= MAX_METRIC_COLUMNS


def test_view_state_groups_by_attack_with_identity_params_first_and_hashes_hidden():
    state = view_state("quick-0123abcd", [_run(PARAMS, FV)])
    cols = state["selectedColumns"]
    assert cols[:4] == ["params.`model`", "params.`layer`", "params.`attack`", "metrics.`train.clip_delta`"]
    assert cols[-2:] == ["params.`prune_method`", "params.`seed`"] and state["columnOrder"] == cols
    assert not any("weights" in c or "trial_key" in c for c in cols)
    assert state["groupBy"]["groupByKeys"] == [{"mode": "param", "groupByData": "attack"}]
    assert state["searchFilter"] == "tags.`vizsweep.sweep_id` = 'quick-0123abcd'"


def test_url_opens_the_shared_view_in_model_training_mode():
    url = runs_view_url("http://127.0.0.1:5000/", "7", "quick-0123abcd")
    assert url == ("http://127.0.0.1:5000/#/experiments/7/runs"
                   "?viewStateShareKey=vizsweep-quick-0123abcd&workflowType=machine_learning")  # fmt: skip
