"""Input-space attacks as a family (SCIENCE.md §7): spec errors before Ray, trials on trials' models
(planning, counting, plan's cost), the runner on a tiny model (Parquet, metrics, content-key reuse),
the executors' choice and pool size, the report's rows; (slow) the Ray Data job inside a trial gives
the local table; (slow) one sweep where adv2 attacks the base model and the push-down trial's model."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from orchestrator.spec import SpecError, load_spec
from shared.attacks import family_of
from shared.attacks.input_attacks import InputAttack
from shared.models.zoo import build_model


def _spec(tmp_path, attacks, **over) -> dict:
    spec = {
        "name": "inp", "store": str(tmp_path / "store"),
        "dataset": {"uri": str(tmp_path / "data"), "synth": {"classes": 16}},
        "models": [{"name": "vgg_mini", "weights": "pretrain"}], "attacks": attacks,
    }  # fmt: skip
    return {**spec, **over}


@pytest.mark.parametrize(
    "entry, field, hint",
    [
        ({"name": "adv2", "target": 40}, "attacks[0].target", "the dataset has classes 0..15"),
        ({"name": "pgd", "target": -1}, "attacks[0].target", "a class index is >= 0"),
        ({"name": "pgd", "eps": 0}, "attacks[0].eps", "outside (0, 1]"),
        ({"name": "adv2", "eps": 1.5}, "attacks[0].eps", "outside (0, 1]"),
        ({"name": "adv2", "interpreter": "gradkam"}, "attacks[0].interpreter", "valid interpreters: gradcam"),
        (
            {"name": "pse", "victims": ["push-down"]},
            "attacks[0].victims",
            "not an attack of this sweep; valid: base",
        ),
        ({"name": "pgd", "victims": ["base", "base"]}, "attacks[0].victims", "names a model twice"),
        ({"name": "pgd", "layer": "conv9"}, "attacks[0].layer", "valid aliases"),
        ({"name": "pgd", "images": 0}, "attacks[0].images", "must be >= 1"),
    ],
)
def test_bad_input_attack_entries_are_spec_errors(tmp_path, entry, field, hint):
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, [entry]))
    lines = [x for x in str(err.value).splitlines() if x.startswith(f"  - {field}") and hint in x]
    assert lines, str(err.value)


def test_on_must_name_an_attack_that_trains_a_model(tmp_path):
    attacks = [{"name": "pgd"}, {"name": "adv2", "victims": ["pgd"]}]
    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, attacks))
    assert "attacks[1].victims" in str(err.value) and "makes no model to attack" in str(err.value)


def _mixed(tmp_path, seeds=(0, 1)):
    return load_spec(_spec(tmp_path, [{"name": "push-down", "k": 5, "decoy_images": 10},
                                      {"name": "adv2", "victims": ["base", "push-down"], "images": 20},
                                      {"name": "pgd", "images": 20}],
                           layers=["conv3", "conv4"], seeds=list(seeds)))  # fmt: skip


def test_trials_on_trials_models_are_planned_after_them_and_counted(tmp_path):
    from orchestrator.plan import Prepared, Variant, plan_trials

    spec = _mixed(tmp_path)
    # per seed: push-down x 2 layers, adv2 on base + on each push-down trial (2), pgd on base
    assert spec.trial_count() == 2 * (2 + 1 + 2 + 1)
    prep = Prepared("/d", "ds", (Variant("vgg_mini", "/w.pt", "v0", "v0"),), "reference:/r.pt")
    plans = plan_trials(spec, prep)
    assert len(plans) == spec.trial_count() and len({p.trial_key for p in plans}) == len(plans)
    push = {p.trial_key: p for p in plans if p.params["attack"] == "push-down"}
    later = [p for p in plans if p.after]
    assert len(later) == 4 and all(p.params["attack"] == "adv2" for p in later)
    first_keys = [p.trial_key for p in plans[: len(plans) - len(later)]]
    for p in later:
        (dep,) = p.after
        assert dep in first_keys and p.params["seed"] == push[dep].params["seed"]
        assert p.job["start_key"] == push[dep].attack_key and p.job["weights"] == ""
        assert p.params["start"] == "push-down" and "-on-push-down-" in p.run_name
    assert {p.params.get("start") for p in plans if p.params["attack"] == "adv2" and not p.after} == {"base"}


def test_start_models_come_from_the_dependencies_outcomes(tmp_path, monkeypatch):
    from jobs.runners import TrialOutcome
    from orchestrator import plan as plan_mod

    spec = _mixed(tmp_path, seeds=(0,))
    prep = plan_mod.Prepared(
        "/d", "ds", (plan_mod.Variant("vgg_mini", "/w.pt", "v0", "v0"),), "reference:/r.pt"
    )
    plans = plan_mod.plan_trials(spec, prep)
    later = [p for p in plans if p.after]
    trained = {later[0].after[0]}  # one push-down trial finished, the other did not

    def stored(p, store_uri):
        ok = p.trial_key in trained
        return TrialOutcome(p.attack_key, f"/m/{p.attack_key}.pt", [], {}, []) if ok else None

    monkeypatch.setattr(plan_mod, "stored_result", stored)
    ready, blocked = plan_mod.with_start_models(later, plans, spec.store)
    assert len(ready) == 1 and ready[0].trial_job().weights == f"/m/{ready[0].job['start_key']}.pt"
    assert len(blocked) == 1 and "did not finish" in blocked[0]


def test_plan_counts_input_trials_with_gpu_hours(tmp_path):
    from orchestrator.estimate import estimate

    spec = _mixed(tmp_path, seeds=(0,))
    est = estimate(spec)
    assert est["trials"]["total"] == 6 and est["trials"]["per_attack"] == {
        "push-down": 2,
        "adv2": 3,
        "pgd": 1,
    }
    fewer = estimate(load_spec(_spec(tmp_path, [{"name": "push-down", "k": 5, "decoy_images": 10},
                                                {"name": "pgd", "images": 20}], layers=["conv3", "conv4"])))  # fmt: skip
    more = estimate(load_spec(_spec(tmp_path, [{"name": "push-down", "k": 5, "decoy_images": 10},
                                               {"name": "pgd", "images": 2000}], layers=["conv3", "conv4"])))  # fmt: skip
    assert more["totals"]["gpu_hours"] > fewer["totals"]["gpu_hours"] > 0
    adv2 = InputAttack.model_validate({"name": "adv2", "images": 10, "steps": 5, "joint_steps": 10})
    pgd = InputAttack.model_validate({"name": "pgd", "images": 10, "steps": 5})
    fam = family_of("adv2")
    assert fam.evaluation_images(adv2) > fam.evaluation_images(pgd) == 10 * (5 + 4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 classes x 2 train x 3 val at 48 px, and a random vgg_mini for 4 classes."""
    from shared.models.zoo import save_checkpoint
    from shared.synth import generate

    root = tmp_path_factory.mktemp("input")
    data = str(root / "data")
    generate(data, classes=4, train_per_class=2, val_per_class=3, size=48, seed=3, shard_size=40)
    torch.manual_seed(0)
    model, _ = build_model("vgg_mini", num_classes=4)
    return {"root": root, "data": data, "weights": save_checkpoint(model, "vgg_mini", str(root / "m.pt"))}


def _job(tiny, entry: dict):
    from jobs.runners import TrialJob

    e = InputAttack.model_validate(entry)
    fam = family_of(e.name)
    return TrialJob(
        attack=e.name, config=fam.job_config(e), dataset=tiny["data"], model="vgg_mini", weights=tiny["weights"],
        variant_key="tiny", layers=fam.scopes(e, ())[0], units="all", seed=0, train_split="train", val_split="val",
    )  # fmt: skip


@pytest.mark.parametrize(
    "entry, extra",
    [
        ({"name": "adv2", "steps": 2, "joint_steps": 2, "picture_images": 2, "batch_size": 4},
         {"map_l1", "map_l2", "map_iou", "stage1_map_l1", "map_term"}),
        ({"name": "pse", "cw_steps": 3, "grid": 4, "picture_images": 1, "target": 2},
         {"share_promotion", "cam_true_promotion", "cam_target_suppression"}),
    ],
)  # fmt: skip
def test_the_runner_writes_parquet_and_metrics_and_reuses_its_key(tiny, entry, extra):
    from jobs.runners import runner_for
    from shared import store

    job = _job(tiny, {**entry, "images": 6})
    runner = runner_for(job.attack)
    root = str(tiny["root"] / "store")
    assert runner.stored(job, root) is None
    out = runner.run(job, root)
    n = int(out.final["images"])
    assert (n == 6) == ("target" not in entry) and 0.0 <= out.final["success"] <= 1.0  # a fixed target
    # skips the images of its own class (this subset of 6 of the 12 has some)
    assert set(out.final) >= {"success", "clean_acc", "seconds", *extra} and out.model_uri is None
    table_uri = next(u for u, name in out.artifacts if name.endswith(".parquet"))
    fs, path = store.resolve(table_uri)
    t = pq.read_table(path, filesystem=fs).to_pydict()
    assert len(t["image_id"]) == n and all(a != b for a, b in zip(t["label"], t["target"]))
    assert sum(t["success"]) / n == pytest.approx(out.final["success"])
    assert any(name.endswith(".png") for _, name in out.artifacts)
    again = runner.stored(job, root)  # committed: a relaunch recomputes nothing, same figures
    assert again.final == out.final and again.attack_key == out.attack_key
    other = _job(tiny, {**entry, "images": 5})
    assert runner.trial_key(other, "ds") != runner.trial_key(job, "ds") and runner.stored(other, root) is None
    bigger_batch = _job(tiny, {**entry, "images": 6, "batch_size": 2})  # execution only: same key
    assert runner.trial_key(bigger_batch, "ds") == runner.trial_key(job, "ds")


def test_report_rows_and_table():
    fam = family_of("pgd")
    params = {"family": "input", "model": "vgg_mini", "prune_method": "none", "prune_rate": "0.0",
              "attack": "adv2", "interpreter": "gradcam", "start": "push-down", "start_label": "push-down conv4",
              "seed": "0"}  # fmt: skip
    (row,) = fam.report_rows(params, {"success": 0.95, "map_l1": 0.1, "map_l2": 0.2, "map_iou": 0.5,
                                      "stage1_map_l1": 0.3, "images": 20.0})  # fmt: skip
    assert row["victim"] == "push-down conv4" and row["success"] == 0.95 and row["family"] == "input"
    (pse,) = fam.report_rows({**params, "attack": "pse", "start_label": ""}, {"success": 0.5, "share_promotion": 0.25,
                                                                          "cam_true_balanced": 0.5})  # fmt: skip
    md = fam.render_markdown([row, pse])
    assert "| vgg_mini | none | push-down conv4 | adv2 | gradcam | 95.0 | 0.100 |" in md
    assert "| vgg_mini | none | push-down | gradcam | 50.0 | 25.0 |" in md and "in true CAM %" in md


@pytest.mark.slow  # Ray: a task, then a Ray Data actor, each importing torch (about 50 s on 2 busy cores)
def test_the_ray_data_job_in_a_trial_gives_the_local_table(tiny, ray_local):
    """The same per-image table and summary from both executors; ``ray-data`` runs inside a Ray task that
    holds one of the two CPUs, as a trial does, so its actor pool must fit in the one CPU left free."""
    from dataclasses import replace

    from jobs.input_attacks import run_input_attack
    from jobs.runners import runner_for
    from shared import store

    job = _job(tiny, {"name": "adv2", "steps": 2, "joint_steps": 2, "images": 6, "batch_size": 2,
                      "picture_images": 3, "executor": "ray-data"})  # fmt: skip
    spec = runner_for(job.attack).input_spec(job)
    assert spec.executor == "ray-data" and replace(spec, executor="local").key("ds") == spec.key("ds")
    trial = ray_local.remote(num_cpus=1)(run_input_attack)
    remote = ray_local.get(trial.remote(spec, str(tiny["root"] / "ray")), timeout=300)
    local = run_input_attack(replace(spec, executor="local"), str(tiny["root"] / "local"))
    assert (remote.executor, remote.pool, local.executor) == (
        "ray-data",
        "1 actor(s) x 1 CPU, 0 GPU",
        "local",
    )
    tables = []
    for res in (local, remote):
        fs, path = store.resolve(res.table_uri)
        tables.append(pq.read_table(path, filesystem=fs))
        assert store.read_manifest(res.uri)["executor"] == res.executor
    assert tables[0].num_rows == 6 and tables[0].equals(tables[1]), (tables[0], tables[1])
    assert {k: v for k, v in remote.summary.items() if k != "seconds"} == {
        k: v for k, v in local.summary.items() if k != "seconds"
    }
    assert [n for _, n in remote.pictures] == [n for _, n in local.pictures] == ["maps.png"]


def test_executor_choice_and_the_pool_inside_a_trial(monkeypatch):
    """``auto`` on one node without free GPUs: local; with free GPUs: ray-data, one GPU actor each (at most
    one per batch) and a share of the free CPUs; CPU actors: one free CPU each; unknown executors listed."""
    import ray

    import jobs.raysetup
    from jobs import input_attacks
    from jobs.input_raydata import Pool, pool

    free = {"CPU": 2.0}
    monkeypatch.setattr(ray, "available_resources", lambda: dict(free))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(jobs.raysetup, "free_gpus", lambda: 0.0)
    assert input_attacks.choose_executor("ray-data") == "ray-data"
    with pytest.raises(ValueError, match="valid: auto, local, ray-data"):
        input_attacks.choose_executor("gpu")
    assert pool(5) == Pool(2, 1.0, 0, 1) and pool(1) == Pool(1, 1.0, 0, 1)  # 2 of 4 CPUs free: 1 each
    free["CPU"] = 0.0  # a trial holds every CPU: one actor on a sliver, never a pool that waits forever
    assert pool(5) == Pool(1, 0.01, 0, 1)
    monkeypatch.setattr(jobs.raysetup, "free_gpus", lambda: 4.0)
    free["CPU"] = 2.0
    assert pool(3) == Pool(3, 0.6667, 1, 2) and pool(8) == Pool(4, 0.5, 1, 2)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert input_attacks.choose_executor("auto") == "local"  # no Ray: the caller's process
