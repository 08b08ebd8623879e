"""Registries of every plugin kind (STYLE.md): pruners and metrics, `vizsweep list`, and one smoke
test over every registered pruner on a tiny CPU model (a new pruner is tested by registering it)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from orchestrator.cli import main
from shared import plugins
from shared.metrics import METRICS, get_metric, register_metric
from shared.models import load_checkpoint, model_info, save_checkpoint
from shared.models.zoo import build_model
from shared.pruners import (
    PRUNERS,
    PruneContext,
    Pruner,
    get_pruner,
    make_permanent,
    pruner_names,
    register_pruner,
    report_tables,
    weight_pruning_rate,
)
from shared.registry import RegistryError

ROOT = Path(__file__).resolve().parents[1]


# --- pruner registry -------------------------------------------------------------------------


def test_pruner_registry_raises_on_duplicates_and_lists_names_on_a_failed_lookup():
    with pytest.raises(RegistryError, match="pruner 'norm' is already registered"):
        register_pruner("norm")(type("Again", (Pruner,), {}))
    with pytest.raises(RegistryError, match="valid pruners: group, none, norm, vulnerability"):
        get_pruner("magnitude")
    with pytest.raises(TypeError, match="Pruner subclass"):
        register_pruner("not-a-pruner")(object)
    assert "not-a-pruner" not in PRUNERS


def test_pruners_declare_order_tables_and_a_description():
    assert pruner_names() == ["none", "norm", "group", "vulnerability"]  # the unpruned control first
    keys = [p.report_key(v) for p, v in report_tables()]
    assert keys == ["norm", "group-weight", "group-filter", "vulnerability"]
    for name in PRUNERS:
        p = get_pruner(name)
        assert p.name == name and p.description() and "\n" not in p.description()
        assert bool(p.tables) == p.prunes  # every pruned variant has its report tables
    assert [n for n in PRUNERS if get_pruner(n).ranking_attack] == ["vulnerability"]


@pytest.mark.parametrize(
    ("method", "settings", "problems"),
    [
        ("none", {"rate": 0.0, "count": 0}, []),
        ("none", {"rate": 0.5, "count": 0}, ["rate"]),
        ("norm", {"rate": 0.5, "count": 0}, []),
        ("norm", {"rate": 0.0, "count": 0}, ["rate"]),
        ("group", {"rate": 0.5, "count": 0, "priority": "weight"}, []),
        ("group", {"rate": 0.0, "count": 0, "priority": "channel"}, ["rate", "priority"]),
        ("vulnerability", {"rate": 0.0, "count": 4}, []),
        ("vulnerability", {"rate": 0.5, "count": 4}, ["count"]),
        ("vulnerability", {"rate": 0.0, "count": 0}, ["count"]),
    ],
)
def test_setting_problems_are_the_spec_rules(method, settings, problems):
    got = get_pruner(method).setting_problems(SimpleNamespace(**{"priority": "filter", **settings}))
    assert [field for field, _ in got] == problems
    assert all(isinstance(msg, str) and method in msg for _, msg in got)


def test_cost_hooks():
    units = {"conv3": 128, "conv5": 64}
    s = SimpleNamespace(rate=0.25, count=4, layer="conv5", sparse_epochs=2, priority="filter")
    assert get_pruner("norm").units_after(units, s) == units
    assert get_pruner("group").units_after(units, s) == {"conv3": 96, "conv5": 48}
    assert get_pruner("vulnerability").units_after(units, s) == {"conv3": 128, "conv5": 60}
    assert [get_pruner(n).extra_epochs(s) for n in pruner_names()] == [0, 0, 2, 0]
    assert get_pruner("vulnerability").rate_label(s) == 4.0 and get_pruner("norm").rate_label(s) == 0.25
    assert [get_pruner(n).priority_label(s) for n in pruner_names()] == ["", "", "filter", ""]
    assert (
        get_pruner("vulnerability").format_rate(4.0) == "4" and get_pruner("norm").format_rate(0.25) == "25%"
    )


# --- every registered pruner on a tiny CPU model ---------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", PRUNERS.names())
def test_every_pruner_prunes_a_tiny_model_that_saves_and_loads_back(name, tmp_path):
    info = model_info("alexnet_mini")
    torch.manual_seed(0)
    base = build_model("alexnet_mini")[0].eval()
    model = copy.deepcopy(base)
    crop = info.preprocess.crop
    phases: list[str] = []

    def train(m, epochs, phase, after_backward):  # one optimizer step stands in for an epoch
        phases.append(phase)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)
        loss = torch.nn.functional.cross_entropy(m(torch.randn(2, 3, crop, crop)), torch.tensor([0, 1]))
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()

    ctx = PruneContext(
        torch.zeros(1, 3, crop, crop), (info.head,), lambda ly: info.resolve_layer(ly, model), train
    )
    pruner = get_pruner(name)
    settings = SimpleNamespace(rate=0.125, units=tuple(range(8)), layer="conv5", priority="filter",
                               sparse_epochs=1, sparse_reg=1e-4)  # fmt: skip
    if not pruner.prunes:
        settings.rate, settings.units = 0.0, ()
    elif not pruner.takes_units:
        settings.units = ()
    pruner.check_job(settings.rate, settings.units)
    pruned, index_map = pruner().prune(model, settings, ctx)
    assert len(phases) == (1 if pruner.extra_epochs(settings) else 0)  # group's sparse training ran
    make_permanent(pruned.eval())
    x = torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    assert (weight_pruning_rate(base, pruned) > 0) == pruner.prunes
    uri = save_checkpoint(pruned, "alexnet_mini", str(tmp_path / "m.pt"), {"index_map": index_map})
    loaded = load_checkpoint(uri)[0].eval()  # structured: rebuilt from the index map (shared.models.surgery)
    with torch.no_grad():
        assert torch.equal(loaded(x), out)


# --- metric registry ---------------------------------------------------------------------------


def test_metric_registry():
    assert METRICS.names() == sorted(
        ["clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap", "acc", "delta_acc"]
    )
    assert get_metric("clip_delta").label == "CLIP-δ" and get_metric("clip_delta").higher_is_change
    assert not get_metric("kendall_tau").higher_is_change
    with pytest.raises(RegistryError, match="metric 'clip_delta' is already registered"):
        register_metric("clip_delta", description="again", label="x", higher_is_change=True)
    with pytest.raises(RegistryError, match="valid metrics: acc, clip_delta"):
        get_metric("fsr")


# --- vizsweep list ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", plugins.kinds())
def test_every_entry_of_every_kind_has_a_one_line_description(kind):
    for name, description in plugins.listing(kind):
        assert description and "\n" not in description, (kind, name)


def test_a_missing_optional_kind_is_empty_and_a_missing_required_one_raises(monkeypatch):
    ghost = plugins.PluginKind("shared.no_such_kind", "X", plugins._doc, optional=True)
    monkeypatch.setitem(plugins.KINDS, "ghosts", ghost)
    assert plugins.listing("ghosts") == []
    monkeypatch.setitem(plugins.KINDS, "ghosts", plugins.PluginKind("shared.no_such_kind", "X", plugins._doc))
    with pytest.raises(ModuleNotFoundError):
        plugins.listing("ghosts")


@pytest.mark.parametrize(
    ("kind", "names"),
    [("pruners", ["norm", "group", "vulnerability"]), ("attacks", ["finetune", "push-down", "push-up"])],
)
def test_list_prints_names_with_descriptions(kind, names, capsys):
    assert main(["list", kind]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(names) <= set(listed)
    assert all(len(listed[n].split()) > 1 for n in names)  # a description follows each name
    assert list(listed) == sorted(listed)


def test_list_interpreters_exits_0(capsys):
    assert main(["list", "interpreters"]) == 0


def test_list_of_an_unknown_kind_exits_2_with_the_valid_kinds(capsys):
    assert main(["list", "prunrs"]) == 2
    err = capsys.readouterr().err
    assert (
        "did you mean 'pruners'?" in err
        and "attacks, embedders, interpreters, metrics, models, pruners" in err
    )
    assert main(["list", "bogus"]) == 2


def test_list_imports_neither_ray_nor_mlflow():
    script = (
        "import sys; from orchestrator.cli import main; "
        "codes = [main(['list', k]) for k in ('attacks', 'pruners', 'metrics', 'models', 'embedders')]; "
        "print('codes', codes, sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "codes [0, 0, 0, 0, 0] []" in proc.stdout
