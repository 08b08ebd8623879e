"""Saliency fooling as a family (SCIENCE.md §6): its spec errors, its loss hooks on a tiny model, and
(slow, Ray) a whole trial through its runner: fine-tuning, FSR per tested interpreter, accuracies."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from orchestrator.spec import SpecError, load_spec
from shared.attacks import build_attack, families, family_of, train_step
from shared.attacks.saliency import KINDS, SaliencyAttack
from shared.models.zoo import build_model


def _spec(tmp_path, attacks, **over) -> dict:
    spec = {
        "name": "sal", "store": str(tmp_path / "store"),
        "dataset": {"uri": str(tmp_path / "data"), "synth": {"classes": 16}},
        "models": [{"name": "vgg_mini", "weights": "pretrain"}], "attacks": attacks,
    }  # fmt: skip
    return {**spec, **over}


@pytest.mark.parametrize(
    "entry, field, hint",
    [
        (
            {"name": "fool-location", "interpreter": "gradkam"},
            "attacks[0].interpreter",
            "valid interpreters: gradcam",
        ),
        ({"name": "fool-location", "layer": "conv9"}, "attacks[0].layer", "valid aliases"),
        ({"name": "fool-active"}, "attacks[0].classes", "needs classes: [c1, c2]"),
        ({"name": "fool-active", "classes": [3, 3]}, "attacks[0].classes", "two different class indices"),
        ({"name": "fool-active", "classes": [3, 40]}, "attacks[0].classes", "the dataset has classes 0..15"),
        ({"name": "fool-topk", "classes": [1, 2]}, "attacks[0].classes", "fool-active only"),
        ({"name": "fool-topk", "lambda": 1.0, "alpha": "controlled"}, "attacks[0].alpha", "not both"),
        ({"name": "fool-topk", "lambda": -1}, "attacks[0].lambda", "must be > 0"),
        ({"name": "fool-topk", "tested": ["lrp", "shap"]}, "attacks[0].tested", "valid interpreters"),
        ({"name": "saliency-finetune", "lambda": 1.0}, "attacks[0].lambda", "L_C alone"),
        ({"name": "fool-topk", "k": 5}, "attacks[0].k", "unknown key"),
    ],
)
def test_bad_saliency_entries_are_spec_errors(tmp_path, entry, field, hint):
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, [entry]))
    lines = [x for x in str(err.value).splitlines() if x.startswith(f"  - {field}") and hint in x]
    assert lines, str(err.value)


def test_a_saliency_sweep_needs_no_layers_and_counts_one_trial_per_entry(tmp_path):
    spec = load_spec(_spec(tmp_path, [{"name": "saliency-finetune"}, {"name": "fool-location", "lambda": 1.0},
                                      {"name": "fool-topk", "alpha": "controlled", "interpreter": "lrp"}]))  # fmt: skip
    assert spec.layers == () and spec.trial_count() == 3
    fam = family_of("fool-location")
    assert fam.name == "saliency" and {"featureviz", "saliency"} <= {f.name for f in families()}
    location, topk = spec.attacks[1], spec.attacks[2]
    assert not fam.alpha_controlled(location) and fam.alpha_controlled(topk)
    assert fam.job_config(location)["lambda"] == 1.0 and fam.job_config(topk)["kind"] == "topk"


@pytest.mark.parametrize("name", list(KINDS))
def test_every_fooling_attack_trains_a_tiny_model_in_eval_mode(name):
    torch.manual_seed(0)
    model, _ = build_model("vgg_mini", num_classes=4)
    teacher, _ = build_model("vgg_mini", num_classes=4)
    teacher.load_state_dict(model.state_dict())
    teacher.eval().requires_grad_(False)
    raw = {"name": name} | ({"lambda": 0.5} if name != "saliency-finetune" else {})
    entry = SaliencyAttack.model_validate(raw | ({"classes": [0, 1]} if name == "fool-active" else {}))
    config = family_of(name).job_config(entry)
    inputs = {"collages": torch.randn(6, 3, 56, 56), "c1": torch.zeros(6, dtype=torch.long),
              "c2": torch.ones(6, dtype=torch.long)} if name == "fool-active" else None  # fmt: skip
    attack = build_attack(name, inputs, config)
    attack.bind("vgg_mini", teacher)
    model.train(attack.train_mode)
    assert not model.training  # Heo: BatchNorm statistics frozen
    stats = model.features[1].running_mean.clone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = attack.batch(torch.randn(4, 3, 56, 56), torch.tensor([0, 1, 2, 3]), step=0, seed=0)
    losses = train_step(model, "vgg_mini", teacher, attack, batch, 0.5, opt)
    assert math.isfinite(losses.total) and math.isfinite(losses.attack)
    if name != "fool-center-mass":  # Eq. 5 is -|C(h) - C(h0)| = 0 while θ = θ0
        assert (losses.attack == 0.0) == (name == "saliency-finetune")
    assert torch.equal(model.features[1].running_mean, stats)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fixed_lambda_is_heo_eq2_and_the_controller_mixes():
    entry = SaliencyAttack.model_validate({"name": "fool-location", "lambda": 0.4})
    fixed = build_attack("fool-location", None, family_of("fool-location").job_config(entry))
    la, lm = torch.tensor(2.0), torch.tensor(3.0)
    assert fixed.fixed_alpha == 0.0 and fixed.mix(0.9, la, lm).item() == pytest.approx(3.0 + 0.4 * 2.0)
    ctl = build_attack("fool-location", None, {"interpreter": "gradcam"})
    assert ctl.fixed_alpha is None and ctl.mix(0.25, la, lm).item() == pytest.approx(0.25 * 2 + 0.75 * 3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """16 classes x 8 train x 4 val at 48 px, and a random vgg_mini."""
    from shared.models.zoo import save_checkpoint
    from shared.synth import generate

    root = tmp_path_factory.mktemp("saliency")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=8, val_per_class=4, size=48, seed=3, shard_size=40)
    torch.manual_seed(0)
    model, _ = build_model("vgg_mini")
    return {"root": root, "data": data, "weights": save_checkpoint(model, "vgg_mini", str(root / "m.pt"))}


def _job(tiny, entry: dict):
    from jobs.runners import TrialJob

    e = SaliencyAttack.model_validate(entry)
    fam = family_of(e.name)
    return TrialJob(
        attack=e.name, config=fam.job_config(e), dataset=tiny["data"], model="vgg_mini", weights=tiny["weights"],
        variant_key="tiny", layers=fam.scopes(e, ())[0], units="all", seed=0, train_split="train", val_split="val",
        training={"lr": 1e-3, "batch_size": 16, "epochs": 1, "max_steps": 4, "evals_per_epoch": 2, "eval_images": 32},
        alpha={}, evaluation={},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry",
    [{"name": "fool-location", "lambda": 1.0, "picture_images": 2},
     {"name": "fool-active", "lambda": 1.0, "classes": [0, 1], "collages": 26, "tested": ["gradcam"]}],
)  # fmt: skip
def test_a_fooling_trial_measures_fsr_for_every_tested_interpreter(tiny, ray_local, entry):
    import pyarrow.parquet as pq

    from jobs.runners import runner_for
    from shared import store

    job = _job(tiny, entry)
    runner = runner_for(job.attack)
    root = str(tiny["root"] / "store")
    assert runner.stored(job, root) is None
    out = runner.run(job, root)
    tested = job.config["tested"]
    assert set(out.final) >= {
        "fsr",
        "acc",
        "acc_top5",
        "delta_acc",
        "delta_acc_top5",
        *(f"fsr.{i}" for i in tested),
    }
    assert 0.0 <= out.final["fsr"] <= 1.0 and out.final["steps"] == 4
    table_uri = next(u for u, name in out.artifacts if name == "saliency_t.parquet")
    fs, path = store.resolve(table_uri)
    t = pq.read_table(path, filesystem=fs).to_pydict()
    assert set(t["interpreter"]) == set(tested) and set(t["kind"]) == {job.config["kind"]}
    per = len(t["t"]) // len(tested)
    assert per == (
        64 if job.config["kind"] != "active" else 2 * 4
    )  # 16 x 4 val images; 4 held-out collages x 2
    assert runner.stored(job, root).final == out.final  # committed: a relaunch measures nothing again
    assert runner.stored(job, root).costs == {}  # and costs nothing
    parts = ("train_s", "eval_s", "tables_s", "metrics_s", "other_s")
    assert all(out.costs[k] >= 0 for k in parts) and out.costs["train_s"] > 0 and out.costs["eval_s"] > 0
    assert (
        out.costs["metrics_s"] > 0
        and sum(v for k, v in out.costs.items() if k != "wall_s") <= out.costs["wall_s"] + 1e-9
    )


def test_a_trials_cost_parts_sum_to_its_wall_and_reach_its_final_metrics(tiny, monkeypatch):
    """The runner times its jobs (faked here: no Ray) and the orchestrator logs the parts as final metrics."""
    from types import SimpleNamespace

    import jobs.runners
    import jobs.saliency_eval
    from jobs.attack import AttackResult
    from jobs.runners import runner_for
    from jobs.saliency_eval import SaliencyEvalResult
    from orchestrator.trial import finish_run
    from shared import store, timing

    root = str(tiny["root"] / "costs")
    table = store.join(root, "t.parquet")
    store.write_bytes(table, b"t")

    def attack(spec, store_uri, **kw):
        with timing.part("train"):
            sum(range(10_000))
            with timing.part("eval"):
                sum(range(10_000))
        history = [{"step": 4, "alpha": 0.1, "acc": 0.5, "acc_drop": 0.0}]
        return AttackResult(
            store.join(root, "model.pt"), "k", history, 0.5, 0.5, 4, False, False, None, 0.0, 4
        )

    def measure(spec, store_uri):
        acc = {"acc": 0.5, "acc_init": 0.5, "acc_top5": 1.0, "acc_top5_init": 1.0}
        return SaliencyEvalResult(root, {"location": {"gradcam": 0.25}}, acc, table, None, False, 0.0)

    monkeypatch.setattr(jobs.runners, "run_attack", attack)
    monkeypatch.setattr(jobs.saliency_eval, "run_saliency_eval", measure)
    job = _job(tiny, {"name": "fool-location", "lambda": 1.0, "picture_images": 2})
    out = runner_for(job.attack).run(job, root)
    keys = {"train_s", "eval_s", "tables_s", "metrics_s", "other_s", "wall_s"}
    assert set(out.costs) >= keys and not any(k.endswith("_s") for k in out.final)  # costs are not results
    assert sum(v for k, v in out.costs.items() if k != "wall_s") <= out.costs["wall_s"] + 1e-9
    assert out.costs["train_s"] > 0 and out.costs["eval_s"] > 0 and out.costs["tables_s"] == 0.0

    logged: dict = {}
    run = SimpleNamespace(
        log_bytes=lambda name, data: None,
        flush=lambda: None,
        log_final=logged.update,
        set_tags=lambda tags: None,
        finish=lambda s: None,
    )
    plan = SimpleNamespace(attack_key="k", params={"model": "vgg_mini"})
    with timing.active(timing.PartTimer()) as timer:  # a Tune trial's timer, as orchestrator.trial starts it
        with timing.part("train"):
            sum(range(10_000))
        costs = finish_run(run, plan, out)
    assert set(logged) >= keys | {"log_s", "fsr"} and costs == {k: logged[k] for k in costs}
    assert sum(v for k, v in costs.items() if k != "wall_s") <= costs["wall_s"] + 1e-9
    assert timer.totals()["log"] > 0
    logged.clear()
    finish_run(run, plan, dataclasses.replace(out, costs={}))  # an outcome read from the store: no costs
    assert not any(k.endswith("_s") for k in logged) and "fsr" in logged
