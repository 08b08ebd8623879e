"""Pruning defenses (SCIENCE.md §4): rates, fixed masks, structured = masked, index maps, the job's reuse."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

import jobs.prune as prune_job
from jobs.prune import PruneSpec, run_prune
from shared import store
from shared.models import load_checkpoint, read_checkpoint, save_checkpoint
from shared.models.surgery import apply_index_map
from shared.models.zoo import build_model
from shared.pruners import (
    filter_sparsity,
    group_prune,
    make_permanent,
    norm_prune,
    rank_by_clip_delta,
    vulnerability_prune,
    weight_pruning_rate,
    weight_sparsity,
)

CROP = 56  # alexnet_mini's input size


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine run 5-10x faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("alexnet_mini")[0].eval()


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, CROP, CROP, generator=torch.Generator().manual_seed(1))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _masked(model: nn.Module, index_map: dict[str, list[int]]) -> nn.Module:
    """A copy of the unpruned model with the removed units' filters and biases zeroed."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name, kept in index_map.items():
            layer = masked.get_submodule(name)
            drop = [i for i in range(layer.weight.shape[0]) if i not in set(kept)]
            layer.weight[drop] = 0
            layer.bias[drop] = 0
    return masked


def _output_of(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    out = {}
    handle = model.get_submodule(name).register_forward_hook(lambda m, a, o: out.setdefault("y", o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["y"]


# --- norm pruning ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_norm_prune_hits_the_rate(rate):
    model = _model()
    stats = norm_prune(model, rate)
    assert abs(stats["weight_sparsity"] - rate) < 0.01 and abs(weight_sparsity(model) - rate) < 0.01
    assert stats["pruned"] == round(rate * stats["total"])
    # one global threshold: every surviving |w| is >= every pruned original |w|
    kept = torch.cat([(m.weight_orig * m.weight_mask)[m.weight_mask == 1].abs() for m in _layers(model)])
    dead = torch.cat([m.weight_orig[m.weight_mask == 0].abs() for m in _layers(model)])
    assert kept.min() >= dead.max()


def _layers(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_pruned_weights_stay_zero_while_fine_tuning_and_after_make_permanent():
    model = _model().train()
    norm_prune(model, 0.5)
    masks = {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    y = torch.arange(4) % 16
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(_x()), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    make_permanent(model)
    state = model.state_dict()
    assert not [k for k in state if k.endswith(("_orig", "_mask"))]
    for name, mask in masks.items():
        w = state[f"{name}.weight"]
        assert torch.equal(w[mask == 0], torch.zeros_like(w[mask == 0]))
        assert (w[mask == 1] != 0).float().mean() > 0.99  # the survivors did train
    assert abs(weight_sparsity(model) - 0.5) < 0.01
    assert weight_pruning_rate(_model(), model) == pytest.approx(weight_sparsity(model), abs=1e-6)


# --- structured pruning ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "first", "expected"),
    [
        (
            "filter",
            "features.0",
            {"features.0": 24, "features.3": 48, "features.6": 64, "features.8": 64, "features.10": 32},
        ),
        ("weight", "classifier.1", {"classifier.1": 128, "classifier.4": 128}),
    ],
)
def test_group_prune_is_smaller_and_equals_the_masked_model(priority, first, expected):
    model, x = _model(), _x()
    pruned, index_map = group_prune(copy.deepcopy(model), 0.5, x[:1], priority=priority)
    assert _params(pruned) < _params(model)
    assert "classifier.6" not in index_map and pruned.classifier[6].out_features == 16
    assert {k: len(v) for k, v in index_map.items()} == expected
    for name, kept in index_map.items():
        assert kept == sorted(set(kept)) and pruned.get_submodule(name).weight.shape[0] == len(kept)
    masked = _masked(model, index_map)
    kept = index_map[first]
    got, want = _output_of(pruned, first, x), _output_of(masked, first, x)[:, kept]
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    with torch.no_grad():  # zeroed units contribute nothing downstream either
        assert torch.allclose(pruned(x), masked(x), atol=1e-5, rtol=1e-4)
    rate = filter_sparsity(model, pruned)
    assert rate == (0.5 if priority == "filter" else 0.0)
    assert 0 < weight_pruning_rate(model, pruned) < 1


def test_group_prune_respects_protect():
    model = _model()
    _, index_map = group_prune(model, 0.25, _x(1), priority="filter", protect=["features.10"])
    assert "features.10" not in index_map and model.features[10].out_channels == 64


def test_vulnerability_prune_removes_exactly_the_given_units():
    model, x = _model(), _x()
    units = [5, 0, 63, 17]
    pruned, index_map = vulnerability_prune(copy.deepcopy(model), "features.11", units, x[:1])  # conv5's ReLU
    kept = index_map["features.10"]
    assert list(index_map) == ["features.10"] and len(kept) == 60 and not set(units) & set(kept)
    assert pruned.features[10].out_channels == 60 and pruned.classifier[1].in_features == 60 * 4
    got, want = _output_of(pruned, "features.10", x), _output_of(model, "features.10", x)[:, kept]
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert filter_sparsity(model, pruned) == pytest.approx(4 / (48 + 96 + 128 + 128 + 64))


def test_load_checkpoint_rebuilds_a_structured_model_with_identical_outputs(tmp_path):
    model, x = _model(), _x()
    pruned, index_map = group_prune(model, 0.5, x[:1], priority="filter")
    uri = save_checkpoint(pruned, "alexnet_mini", str(tmp_path / "m.pt"), {"index_map": index_map})
    loaded, _ = load_checkpoint(uri)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), pruned.eval()(x))
    with pytest.raises(ValueError, match=r"index_map\['features.0'\]"):
        apply_index_map(_model(), {"features.0": [3, 1]}, x[:1])


def test_rank_by_clip_delta_orders_by_value_then_unit():
    table = pa.table({"unit": [4, 1, 7, 2, 9, 3], "clip_delta": [0.1, 0.5, float("nan"), 0.5, 0.9, -0.2]})
    assert rank_by_clip_delta(table, 3) == [9, 1, 2]
    assert rank_by_clip_delta(table, 6) == [9, 1, 2, 4, 3, 7]
    with pytest.raises(ValueError, match=r"n=7: must be an integer in 1\.\.6"):
        rank_by_clip_delta(table, 7)


# --- validation ----------------------------------------------------------------------------

_BASE = {"dataset": "/nowhere", "model": "alexnet_mini", "weights": "/w.pt", "base_key": "b"}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (
            {"method": "magnitude", "rate": 0.5},
            r"PruneSpec\.method='magnitude'.*none, norm, group, vulnerability",
        ),
        ({"method": "norm", "rate": 1.5}, r"PruneSpec\.rate=1\.5: must be a fraction with 0 < rate < 1"),
        ({"method": "group", "rate": 0.0}, r"PruneSpec\.rate=0\.0"),
        (
            {"method": "group", "rate": 0.5, "priority": "channel"},
            r"PruneSpec\.priority='channel'.*filter, weight",
        ),
        ({"method": "none", "rate": 0.5}, r"method 'none' prunes nothing"),
        ({"method": "vulnerability", "rate": 0.5}, r"PruneSpec\.units=\(\).*needs unit indices"),
        ({"method": "norm", "rate": 0.5, "units": (1,)}, r"only method 'vulnerability' takes units"),
        ({"method": "norm", "rate": 0.5, "epochs": 0}, r"PruneSpec\.epochs=0: must be an integer >= 1"),
    ],
)
def test_bad_specs_name_the_field_and_the_valid_values(fields, match):
    with pytest.raises(ValueError, match=match):
        PruneSpec(**_BASE, **fields)


def test_library_rejects_bad_rates():
    with pytest.raises(ValueError, match=r"rate=1\.0: must be a fraction"):
        norm_prune(_model(), 1.0)
    with pytest.raises(ValueError, match=r"priority='both'"):
        group_prune(_model(), 0.5, _x(1), priority="both")


# --- the job ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 16-class synthetic dataset (64 train, 32 val images) and a random base checkpoint."""
    from shared.synth import generate

    root = tmp_path_factory.mktemp("prune")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=4, val_per_class=2, size=64)
    base = save_checkpoint(
        _model(), "alexnet_mini", str(root / "base.pt"), {"classes": [str(i) for i in range(16)]}
    )
    return data, base


def _spec(tiny, **kw) -> PruneSpec:
    data, base = tiny
    return PruneSpec(dataset=data, model="alexnet_mini", weights=base, base_key="base0", **kw)


def test_run_prune_norm_stores_once_then_reuses(tiny, tmp_path, monkeypatch):
    spec = _spec(tiny, method="norm", rate=0.5)
    res = run_prune(spec, str(tmp_path))
    out = store.join(str(tmp_path), "models", res.key)
    m = store.read_manifest(out)
    assert not res.reused and res.index_map_uri is None and res.model_uri == store.join(out, "model.pt")
    assert abs(res.weight_rate - 0.5) < 0.01 and 0.0 <= res.acc <= 1.0
    assert (m["weight_pruning_rate"], m["filter_pruning_rate"], m["fine_tuned_acc"]) == (
        res.weight_rate, res.filter_rate, res.acc,
    )  # fmt: skip
    assert m["method"] == "norm" and m["rate"] == 0.5 and m["files"] == ["model.pt"]
    assert not [k for k in read_checkpoint(res.model_uri)["state_dict"] if k.endswith("_orig")]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must be reused, not redone")

    monkeypatch.setattr(prune_job, "_fit", no_training)
    again = run_prune(spec, str(tmp_path))
    assert again.reused and again.key == res.key and again.acc == res.acc
    assert run_prune(_spec(tiny, method="none", rate=0.0), str(tmp_path)) == prune_job.PruneResult(
        tiny[1], "base0", 0.0, 0.0, None, True, None
    )


def _val_accuracy(model, data: str) -> float:
    from shared.datasets import decode_image, iter_records
    from shared.models.zoo import model_info

    pre = model_info("alexnet_mini").preprocess
    recs = list(iter_records(data, "val"))
    x = torch.from_numpy(np.stack([decode_image(r["image"], pre) for r in recs]))
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    return float((pred == torch.tensor([r["label"] for r in recs])).float().mean())


def test_run_prune_structured_stores_the_index_map_and_loads_back(tiny, tmp_path):
    spec = _spec(tiny, method="vulnerability", rate=0.125, units=tuple(range(0, 64, 8)), layer="conv5")
    res = run_prune(spec, str(tmp_path))
    index_map = store.read_json(res.index_map_uri)
    assert list(index_map) == ["features.10"] and len(index_map["features.10"]) == 56
    assert res.filter_rate == pytest.approx(8 / 464)
    model = load_checkpoint(res.model_uri)[0]
    assert model.features[10].out_channels == 56
    assert _val_accuracy(model, tiny[0]) == pytest.approx(res.acc)  # the stored model is the measured one
    with pytest.raises(ValueError, match=r"rate must be len\(units\) / 64"):
        run_prune(_spec(tiny, method="vulnerability", rate=0.5, units=(1, 2)), str(tmp_path))


def test_run_prune_group_with_sparse_training(tiny, tmp_path):
    res = run_prune(_spec(tiny, method="group", rate=0.25, priority="weight", sparse_epochs=1), str(tmp_path))
    model = load_checkpoint(res.model_uri)[0]
    assert model.classifier[1].out_features == 192 and model.classifier[6].out_features == 16
    assert res.filter_rate == 0.0 and 0.05 < res.weight_rate < 0.25
