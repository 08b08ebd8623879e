"""Input attacks on models already in the store (``sweep:<id>/<run>``, ``key:<content key>``): they resolve
when planning (first-round trials with known weights, once per sweep), and a reference that names no
committed model is a `vizsweep validate` error at ``attacks[i].victims[j]`` before Ray starts.

The store is written by hand, as the real writers do: another sweep's ``plan.json`` (planned here), the
trained model's folder ``models/<attack key>/`` with its manifest; no Ray, no training."""

from __future__ import annotations

import json

import pytest

from jobs.attack import model_dir
from orchestrator.spec import SpecError, load_spec
from orchestrator.status import sweep_dir
from shared import store

OTHER = "first-0123abcd"  # the other sweep of the same store


def _spec(root, attacks, **over) -> dict:
    spec = {
        "name": "inp", "store": str(root / "store"),
        "dataset": {"uri": str(root / "data"), "synth": {"classes": 16}},
        "models": [{"name": "vgg_mini", "weights": "pretrain"}], "attacks": attacks,
    }  # fmt: skip
    return {**spec, **over}


def _commit_model(store_uri: str, key: str, manifest: dict) -> str:
    """A model folder as jobs.attack / jobs.prune commit it: model.pt, then _MANIFEST.json."""
    out = model_dir(store_uri, key)
    store.write_bytes(store.join(out, "model.pt"), b"weights")
    store.write_manifest(out, {"key": key, "model": "vgg_mini", "files": ["model.pt"], **manifest})
    return store.join(out, "model.pt")


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A store with sweep OTHER (push-down on conv3: seed 0 finished, seed 1 not) and a pruned variant."""
    from jobs import runners
    from jobs.metrics import LayerSplitMetrics, MetricsResult
    from orchestrator.plan import Prepared, Variant, plan_trials
    from shared.dataset_meta import dataset_id

    data = str(tmp_path / "data")
    store.write_manifest(data, {"files": [], "name": "tiny"})  # a dataset id without shards
    src = load_spec(_spec(tmp_path, [{"name": "push-down", "k": 5, "decoy_images": 10}, {"name": "pgd"}],
                          layers=["conv3"], seeds=[0, 1]))  # fmt: skip
    prep = Prepared(data, dataset_id(data), (Variant("vgg_mini", "/w.pt", "v0", "v0"),), "reference:/r.pt")
    plans = plan_trials(src, prep)
    sdir = sweep_dir(src.store, OTHER)
    store.write_json(store.join(sdir, "plan.json"), [p.to_dict() for p in plans])
    push = [p for p in plans if p.params["attack"] == "push-down"]
    done, pgd = push[0], next(p for p in plans if p.params["attack"] == "pgd")
    weights = _commit_model(src.store, done.attack_key, {"kind": "attacked-model", "history": [], "steps": 3,
                                                          "inputs": {"dataset": data, "weights": "/w.pt",
                                                                     "variant_key": "pruned0"}})  # fmt: skip
    pruned = _commit_model(src.store, "pruned0", {"kind": "pruned", "method": "norm", "rate": 0.5,
                                                   "base_key": "v0"})  # fmt: skip
    m = LayerSplitMetrics("conv3", "val", "/m", "/m/t.parquet", None, [], {}, 0.9, 0.9, 0.0, "mk", True)
    monkeypatch.setattr(runners, "committed_metrics", lambda spec, uri: MetricsResult({("conv3", "val"): m}, {}, True, 0.0))  # fmt: skip
    return {"root": tmp_path, "store": src.store, "prep": prep, "done": done, "open": push[1], "pgd": pgd,
            "weights": weights, "pruned": pruned}  # fmt: skip


def test_both_references_resolve_to_the_committed_models(world):
    from orchestrator.store_models import resolve

    done = world["done"]
    sm = resolve(f"sweep:{OTHER}/{done.run_name}", world["store"])
    assert (sm.weights, sm.key, sm.model, sm.run) == (
        world["weights"],
        done.attack_key,
        "vgg_mini",
        done.run_name,
    )
    assert sm.variant["key"] == "v0"  # the variant it was trained from labels the run
    by_key = resolve(f"key:{done.attack_key}", world["store"])
    assert by_key.weights == world["weights"] and by_key.key == done.attack_key
    assert by_key.variant["prune_method"] == "norm" and by_key.variant["prune_rate"] == 0.5  # its variant's
    pruned = resolve("key:pruned0", world["store"])
    assert pruned.weights == world["pruned"] and pruned.variant["prune_method"] == "norm"


def test_planning_makes_first_round_trials_with_the_store_models_weights(world):
    from orchestrator.estimate import estimate
    from orchestrator.plan import plan_trials

    done = world["done"]
    refs = [f"sweep:{OTHER}/{done.run_name}", "key:pruned0"]
    spec = load_spec(_spec(world["root"], [{"name": "adv2", "victims": ["base", *refs], "images": 4}],
                           seeds=[0, 1]))  # fmt: skip
    assert spec.trial_count() == 2 * (1 + 2)  # base per variant, each store model once (per seed)
    assert estimate(spec)["trials"]["per_attack"] == {
        "adv2": spec.trial_count()
    }  # `vizsweep plan` counts them
    assert "a model of the store" in spec.trial_formula()
    plans = plan_trials(spec, world["prep"])
    assert len(plans) == spec.trial_count() and len({p.trial_key for p in plans}) == len(plans)
    on_store = [p for p in plans if p.params.get("start", "base") != "base"]
    assert len(on_store) == 4 and not any(p.after for p in plans)  # all first-round
    for p in on_store:
        job = p.trial_job()
        want = world["pruned"] if p.params["start"] == "key:pruned0" else world["weights"]
        assert job.weights == want and job.start_key == want.rsplit("/", 2)[-2]
        assert p.params["start_label"] == p.params["start"] and "-on-" in p.run_name
    by_sweep = [p for p in on_store if p.params["start"].startswith("sweep:")]
    assert {p.params["start_run"] for p in by_sweep} == {done.run_name}
    # the same model by sweep + run and by key: one measurement (content key), planned once
    twice = spec.model_copy(update={"attacks": (spec.attacks[0].model_copy(update={"victims": (*refs, f"key:{done.attack_key}")}),)})  # fmt: skip
    assert len(plan_trials(twice, world["prep"])) == 2 * 2


@pytest.mark.parametrize(
    "victims, hint",
    [
        (["sweep:nope-00000000/{done}"], "no sweep 'nope-00000000' in the store"),
        (["sweep:{other}/not-a-run"], "its runs: "),
        (["sweep:{other}/{open}"], "has no stored model: it has not finished (`vizsweep status {other}`"),
        (["sweep:{other}/{pgd}"], "trains no model"),
        (["key:0000deadbeef0000"], "no committed model with content key '0000deadbeef0000'"),
        (["sweep:{other}"], "is not a store model reference"),
        (["sweep:{other}/{done}", "key:{done_key}"], "is the model attacks[1].victims[1] names"),
    ],
)
def test_a_bad_reference_is_a_validate_error_naming_the_victim(world, capsys, victims, hint):
    from orchestrator.cli import main

    names = {"other": OTHER, "done": world["done"].run_name, "open": world["open"].run_name,
             "pgd": world["pgd"].run_name, "done_key": world["done"].attack_key}  # fmt: skip
    victims, hint = ["base", *(v.format(**names) for v in victims)], hint.format(**names)
    spec = _spec(world["root"], [{"name": "pgd"}, {"name": "adv2", "victims": victims}])
    path = world["root"] / "bad.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    field = f"attacks[1].victims[{len(victims) - 1}]"
    assert any(field in line and hint in line for line in err.splitlines()), err
    if "its runs" in hint:
        assert world["done"].run_name in err  # the valid run names are listed


def test_store_references_pass_validation_when_committed(world):
    done = world["done"]
    victims = ["base", f"sweep:{OTHER}/{done.run_name}", "key:pruned0"]
    spec = load_spec(_spec(world["root"], [{"name": "pse", "victims": victims}]), check_environment=True)
    assert spec.attacks[0].victims == tuple(victims)
    with pytest.raises(SpecError) as err:  # and not mistaken for an attack of this sweep
        load_spec(_spec(world["root"], [{"name": "pse", "victims": ["push"]}]))
    assert "sweep:<sweep id>/<run name> or key:<content key>" in str(err.value)


def test_a_store_model_of_another_architecture_is_checked_for_the_layer(world):
    """The layer is checked on the victim's own model: alexnet_mini has conv5, vgg_mini has not."""
    _commit_model(world["store"], "alex0", {"kind": "pretrained-model", "model": "alexnet_mini"})
    spec = _spec(world["root"], [{"name": "pgd", "layer": "conv5", "victims": ["key:alex0"]}],
                 models=[{"name": "alexnet_mini", "weights": "pretrain"}])  # fmt: skip
    assert load_spec(spec, check_environment=True).attacks[0].victims == ("key:alex0",)
    with pytest.raises(SpecError) as err:  # the sweep's model has conv5, the pruned vgg_mini has not
        load_spec({**spec, "attacks": [{"name": "pgd", "layer": "conv5", "victims": ["key:pruned0"]}]},
                  check_environment=True)  # fmt: skip
    lines = [x for x in str(err.value).splitlines() if x.startswith("  - attacks[0].layer")]
    assert len(lines) == 1 and "victims[0] key:pruned0: vgg_mini" in lines[0], str(err.value)
