"""The sweep spec: every bad spec is rejected with its field's path and what would be valid, before Ray."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import ValidationError

from orchestrator.cli import main
from orchestrator.spec import (
    PruningSpec,
    SpecError,
    SweepSpec,
    TrainingSpec,
    load_spec,
    validate_spec,
)
from shared.alpha import AlphaConfig
from shared.attacks.featureviz import FeatureVizAttack

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart.yaml"
DROP = object()  # in a case's edits: delete the key


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory (relative paths resolve here) on a machine without GPUs or a cluster."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    return tmp_path


def quickstart() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def edited(edits: dict[str, Any]) -> dict[str, Any]:
    """The quickstart spec with ``{"attacks[1].name": "x", "seed": [0], "name": DROP}`` applied."""
    doc = quickstart()
    for path, value in edits.items():
        *parents, last = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
        node = doc
        for key in parents:
            node = node[key]
        if value is DROP:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(value)
        else:
            node[last] = value
    return doc


# (id, edits of the quickstart spec or raw YAML text, field path in the message, hint of what is valid)
BAD = [
    ("unknown-key", {"seed": [0]}, "seed", "did you mean 'seeds'?"),
    ("unknown-nested-key", {"training.epoch": 3}, "training.epoch", "did you mean 'epochs'?"),
    ("key-one-level-too-high", {"lr": 0.1}, "lr", "belongs under training: (training.lr)"),
    ("seeds-not-a-list", {"seeds": "zero"}, "seeds", "expected a list, got the string 'zero'"),
    ("lr-not-a-number", {"training.lr": "fast"}, "training.lr", "expected a number"),
    ("layers-a-string", {"layers": "conv5"}, "layers", "write [conv5]"),
    ("amp-not-a-bool", {"training.amp": "yes please"}, "training.amp", "expected true or false"),
    ("missing-name", {"name": DROP}, "name", "missing; it is required (e.g. name: quickstart)"),
    ("missing-dataset-uri", {"dataset.uri": DROP}, "dataset.uri", "required (a dataset root"),
    ("bad-name", {"name": "my sweep"}, "name", "only letters, digits"),
    ("empty-models", {"models": []}, "models", "must not be empty (e.g."),
    (
        "unknown-model",
        {"models[0].name": "alexnet_maxi"},
        "models[0].name",
        "valid models: alexnet, alexnet_mini",
    ),
    ("unknown-layer", {"layers[1]": "conv9"}, "layers[1]", "'alexnet_mini'; valid aliases: conv1, conv2"),
    ("unknown-attack", {"attacks[1].name": "pushdown"}, "attacks[1].name", "finetune, push-down, push-up"),
    ("scope-typo", {"attacks[0].scope": "layr"}, "attacks[0].scope", "did you mean 'layer'?"),
    ("unit-without-units", {"attacks[1].scope": "unit"}, "attacks[1].units", "needs units: [j, ...]"),
    ("units-without-unit", {"attacks[1].units": [3]}, "attacks[1].units", "set scope: unit or drop units"),
    ("negative-unit", {"attacks[1].scope": "unit", "attacks[1].units": [-1]}, "attacks[1].units", ">= 0"),
    ("duplicate-attack", {"attacks[3]": {"name": "finetune"}}, "attacks[3]", "repeats attacks[0]"),
    ("attack-key-typo", {"attacks[2].decoy_clas": 3}, "attacks[2].decoy_clas", "did you mean 'decoy_class'?"),
    ("attack-k-zero", {"attacks[1].k": 0}, "attacks[1].k", "must be >= 1, got 0"),
    (
        "attack-k-a-string",
        {"attacks[1].k": "ten"},
        "attacks[1].k",
        "expected an integer, got the string 'ten'",
    ),
    ("attack-decoy-negative", {"attacks[2].decoy_class": -1}, "attacks[2].decoy_class", "must be >= 0"),
    ("attack-scale", {"attacks[1].scale": "units"}, "attacks[1].scale", "did you mean 'unit'?"),
    ("attack-no-name", {"attacks[1]": {"scope": "layer"}}, "attacks[1].name", "missing; it is required"),
    ("attack-a-string", {"attacks[1]": "push-down"}, "attacks[1]", "write {name: push-down}"),
    ("moved-training-key", {"training.k": 5}, "training.k", "set it on the attacks[i] entries"),
    ("dataset-missing", {"dataset.synth": DROP}, "dataset.uri", "add `synth: {}`"),
    ("synth-classes", {"dataset.synth.classes": 999}, "dataset.synth.classes", "must be between 1 and"),
    ("synth-splits", {"dataset.val_split": "test"}, "dataset.val_split", "splits 'train' and 'val'"),
    (
        "weights-missing",
        {"models[0].weights": "./nowhere/model.pt"},
        "models[0].weights",
        "does not exist; give",
    ),
    (
        "weights-bad-scheme",
        {"models[0].weights": "http://x/m.pt"},
        "models[0].weights",
        "use a local path, file://",
    ),
    (
        "tv-weights-on-mini",
        {"models[0].weights": "IMAGENET1K_V1"},
        "models[0].weights",
        "has none; use 'pretrain'",
    ),
    (
        "pretrain-on-resnet50",
        {"models[0].name": "resnet50", "layers": ["layer4.2.conv2"]},
        "models[0].weights",
        "give torchvision weights (IMAGENET1K_V1, IMAGENET1K_V2",
    ),
    (
        "unknown-tv-weights",
        {"models[0]": {"name": "alexnet", "weights": "IMAGENET1K_V9"}},
        "models[0].weights",
        "valid: IMAGENET1K_V1",
    ),
    ("alpha-max-1", {"alpha.alpha_max": 1.0}, "alpha.alpha_max", "must be in (0, 1)"),
    ("alpha-not-a-number", {"alpha.alpha0": "high"}, "alpha.alpha0", "expected a number"),
    ("negative-seed", {"seeds": [0, -1]}, "seeds[1]", "must be >= 0"),
    ("duplicate-seed", {"seeds": [0, 0]}, "seeds[1]", "repeats seeds[0]"),
    ("no-gpu", {"resources.gpus_per_trial": 1}, "resources.gpus_per_trial", "impossible resources"),
    ("cpus", {"resources.cpus_per_trial": 100_000}, "resources.cpus_per_trial", "impossible resources"),
    ("gpus-word", {"resources.gpus_per_trial": "lots"}, "resources.gpus_per_trial", "a number or 'auto'"),
    (
        "unknown-embedder",
        {"metrics.embedder": "clip"},
        "metrics.embedder",
        "valid embedders: open_clip, reference",
    ),
    (
        "bad-open-clip",
        {"metrics.embedder": "open_clip:"},
        "metrics.embedder",
        "e.g. open_clip:ViT-B-32:openai",
    ),
    (
        "reference-missing",
        {"metrics.embedder": "reference:./no.pt"},
        "metrics.embedder",
        "or plain 'reference'",
    ),
    (
        "metrics-split",
        {"metrics.splits": ["train", "test"]},
        "metrics.splits[1]",
        "dataset.val_split ('val')",
    ),
    ("pruning-method", {"pruning[0].method": "magnitude"}, "pruning[0].method", "is not one of: none"),
    ("pruning-rate", {"pruning[0].rate": 0.5}, "pruning[0].rate", "rate must be 0.0"),
    ("max-failures", {"max_failures": -1}, "max_failures", "must be >= 0"),
    ("max-steps", {"training.max_steps": 0}, "training.max_steps", "must be >= 1"),
    ("store-scheme", {"store": "gs://bucket/x"}, "store", "use a local path, file:// or s3://"),
    ("empty-file", "", "the file is empty", "needs at least name, dataset, models"),
    ("only-comments", "# nothing yet\n", "the file is empty", "see examples/quickstart.yaml"),
    ("not-a-mapping", "- name: x\n", "(top level)", "a sweep spec is a mapping (name:, dataset:"),
    (
        "yaml-syntax",
        "name: x\nlayers: [conv3\nseeds: [0]\n",
        "YAML syntax error at line 3",
        "expected ',' or ']'",
    ),
    ("two-documents", "name: a\n---\nname: b\n", "YAML syntax error at line 2", "single document"),
    ("duplicate-yaml-key", "name: a\nname: b\n", "name (line 2)", "appears twice (lines 1 and 2)"),
]


def write_case(workdir: Path, spec: dict | str) -> Path:
    path = workdir / "bad.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


def problem_lines(message: str, field: str, hint: str) -> list[str]:
    return [line for line in message.splitlines()[1:] if line.startswith(f"  - {field}") and hint in line]


@pytest.mark.parametrize(("edits", "field", "hint"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_spec_names_the_field_and_what_is_valid(workdir, edits, field, hint):
    path = write_case(workdir, edits if isinstance(edits, str) else edited(edits))
    with pytest.raises(SpecError) as err:
        load_spec(path, check_environment=True)
    message = str(err.value)
    assert re.match(rf"{re.escape(str(path))}: \d+ problem\(s\) in the sweep spec\n", message)
    assert problem_lines(message, field, hint), message


@pytest.mark.parametrize(("edits", "field", "hint"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_cli_validate_bad_spec_exits_2_before_ray(workdir, capsys, monkeypatch, edits, field, hint):
    import jobs.raysetup

    started: list[bool] = []
    monkeypatch.setattr(jobs.raysetup, "ensure_ray", lambda *a, **k: started.append(True))
    path = write_case(workdir, edits if isinstance(edits, str) else edited(edits))
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"vizsweep: error: {path}: ") and not captured.out
    assert problem_lines(captured.err, field, hint) and "Traceback" not in captured.err
    assert not started, "a bad spec must be rejected before Ray starts"


def test_validate_in_a_fresh_process_never_imports_ray(workdir):
    bad = write_case(workdir, edited({"layers[1]": "conv9"}))
    script = (
        "import sys; from orchestrator.cli import main; "
        f"codes = [main(['validate', {str(bad)!r}]), main(['validate', {str(EXAMPLE)!r}])]; "
        "print('codes', codes, 'ray' in sys.modules or any(m.startswith('ray.') for m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "codes [2, 0] False" in proc.stdout
    assert "layers[1]" in proc.stderr and "Traceback" not in proc.stderr


def test_quickstart_validates_and_counts_its_trials(workdir, capsys):
    assert main(["validate", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == (
        "ok: quickstart: 6 trials (1 model × 1 pruning setting × 1 seed × 2 layers × 3 attacks)\n"
    )


def test_quickstart_resolves_paths_against_the_working_directory(workdir):
    spec = load_spec(EXAMPLE, check_environment=True)
    assert spec.store == f"file://{workdir}/vizsweep-store"
    assert spec.dataset.uri == f"file://{workdir}/vizsweep-store/datasets/synthetic-16"
    assert spec.tracking_uri == f"sqlite:///{workdir}/vizsweep-store/mlflow.db"
    assert spec.trial_count() == 6 and [a.name for a in spec.attacks] == ["finetune", "push-down", "push-up"]


def test_spec_is_frozen_hashable_and_round_trips_through_to_dict(workdir):
    spec = load_spec(EXAMPLE)
    as_dict = spec.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert load_spec(as_dict) == spec and hash(load_spec(as_dict)) == hash(spec)
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_a_minimal_spec_gets_the_documented_defaults(workdir):
    spec = load_spec(
        {
            "name": "tiny",
            "dataset": {"uri": "data", "synth": {}},
            "models": [{"name": "alexnet_mini", "weights": "pretrain"}],
            "layers": ["conv5"],
            "attacks": [{"name": "push-down"}],
        }
    )
    assert spec.store == f"file://{workdir}/vizsweep-store" and spec.ray_address is None
    assert spec.pruning == (PruningSpec(),) and spec.seeds == (0,) and spec.max_failures == 2
    assert spec.alpha == AlphaConfig() and spec.training == TrainingSpec()
    assert spec.metrics.embedder == "reference" and spec.metrics.splits == ("train", "val")
    assert spec.resources.gpus_per_trial == "auto" and spec.attacks == (FeatureVizAttack(name="push-down"),)


def test_an_s3_store_keeps_mlflow_in_the_working_directory(workdir):
    spec = load_spec(edited({"store": "s3://bucket/sweeps/"}))
    assert spec.store == "s3://bucket/sweeps"
    assert spec.tracking_uri == f"sqlite:///{workdir}/mlflow.db"


def test_yaml_11_numbers_and_ints_are_read_as_meant(workdir):
    path = write_case(workdir, EXAMPLE.read_text().replace("lr: 1.0e-4", "lr: 1e-4"))
    spec = load_spec(path)
    assert spec.training.lr == 1e-4
    assert load_spec(edited({"resources.cpus_per_trial": 1})).resources.cpus_per_trial == 1.0


def test_trial_count_follows_scopes(workdir):
    spec = load_spec(
        edited(
            {
                "models[1]": {"name": "resnet_mini", "weights": "pretrain"},
                "layers": ["layer2", "layer3"],
                "models[0].name": "resnet_mini",
                "models[0].weights": "./ckpt.pt",
                "seeds": [0, 1, 2],
                "attacks": [
                    {"name": "push-down"},
                    {"name": "push-up", "scope": "layers"},
                    {"name": "push-down", "scope": "unit", "units": [7, 2]},
                ],
            }
        )
    )
    assert spec.attacks[2].units == (2, 7)
    assert spec.trial_count() == 2 * 1 * 3 * (2 + 1 + 2)
    assert spec.trial_formula().endswith("3 seeds × (2 + 1 + 2) layer scopes of 3 attacks")


def test_every_problem_is_reported_at_once_with_its_line(workdir):
    path = write_case(
        workdir,
        edited({"seed": [1], "training.lr": "fast", "attacks[1].name": "pushdown", "dataset.synth": DROP}),
    )
    with pytest.raises(SpecError) as err:
        load_spec(path, check_environment=True)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: 4 problem(s) in the sweep spec"
    assert all(re.match(r"  - \S+ \(line \d+\): ", line) for line in lines[1:]), lines


def test_a_layer_must_exist_in_every_model(workdir):
    doc = edited({"models[1]": {"name": "resnet_mini", "weights": "pretrain"}, "layers": ["conv5"]})
    with pytest.raises(SpecError) as err:
        load_spec(doc)
    assert problem_lines(str(err.value), "layers[0]", "'resnet_mini'; valid aliases: layer1")
    assert "models[1]" in str(err.value)


def test_a_bad_model_does_not_hide_the_layer_problems_of_the_good_ones(workdir):
    doc = edited({"models[1]": {"name": "resnet50", "weights": "pretrain"}, "layers[1]": "conv9"})
    with pytest.raises(SpecError) as err:
        load_spec(doc)
    assert problem_lines(str(err.value), "models[1].weights", "'pretrain' trains from scratch")
    assert problem_lines(str(err.value), "layers[1]", "unknown layer 'conv9' for model 'alexnet_mini'")


def test_an_existing_dataset_and_checkpoint_validate(workdir):
    from shared.synth import generate

    generate(str(workdir / "data"), classes=16, train_per_class=1, val_per_class=1, size=16)
    from shared.models import model_info, save_checkpoint

    # validate opens the checkpoint safely and matches it to the model (test_bad_inputs.py: bad ones)
    save_checkpoint(model_info("alexnet_mini").builder(16), "alexnet_mini", str(workdir / "base.pt"))
    spec = load_spec(
        edited({"dataset.uri": "data", "dataset.synth": DROP, "models[0].weights": "base.pt"}),
        check_environment=True,
    )
    assert (
        spec.models[0].weights == f"file://{workdir}/base.pt" and spec.models[0].weights_kind == "checkpoint"
    )
    validate_spec(spec)
    renamed = {"dataset.val_split": "holdout", "metrics.splits": ["train", "holdout"]}
    spec = load_spec(edited({"dataset.uri": "data", "dataset.synth": DROP, **renamed}))
    with pytest.raises(SpecError, match=r"dataset.val_split: split 'holdout' not found .*splits there: "):
        validate_spec(spec)


def test_a_cluster_is_trusted_with_its_resources(workdir, monkeypatch):
    doc = edited({"resources.gpus_per_trial": 4, "resources.cpus_per_trial": 10_000})
    validate_spec(load_spec({**doc, "ray_address": "ray://head:10001"}))
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    validate_spec(load_spec(doc))


def test_load_spec_alone_leaves_the_filesystem_to_validate_spec(workdir):
    spec = load_spec(edited({"dataset.synth": DROP, "models[0].weights": "missing.pt"}))
    with pytest.raises(SpecError) as err:
        validate_spec(spec)
    assert err.value.problems[0].startswith("dataset.uri: ") and err.value.problems[1].startswith(
        "models[0].weights: "
    )


def test_spec_sections_feed_the_jobs_specs():
    """The training and metrics sections use the job specs' own field names, so the planner can pass them on."""
    from jobs.attack import AttackSpec
    from jobs.metrics import MetricsSpec
    from orchestrator.spec import MetricsSettings

    job_fields = {f.name for f in dataclasses.fields(AttackSpec)}
    assert set(TrainingSpec.model_fields) <= job_fields
    stage_own = {"featureviz"}  # the synthetic feature-visualization stage's block (jobs.featureviz_stage)
    assert set(MetricsSettings.model_fields) - stage_own <= {f.name for f in dataclasses.fields(MetricsSpec)}
    assert set(SweepSpec.model_fields) >= {
        "alpha",
        "seeds",
        "models",
        "layers",
        "attacks",
    }


# --- attack entries belong to their family --------------------------------------------------------


@pytest.fixture
def probe_family(monkeypatch):
    """A second attack family, registered for one test only (the registry is restored afterwards)."""
    from typing import Literal

    from pydantic import Field

    from shared.attacks import FAMILIES, AttackConfig, AttackFamily, register_family

    class ProbeAttack(AttackConfig):
        name: Literal["probe-up"]
        images: int = Field(8, ge=1)  # random images pushed up

    class Probe(AttackFamily):
        name = "probe"
        config = ProbeAttack
        attacks = ("probe-up",)

        @classmethod
        def scopes(cls, entry, layers):
            return (tuple(layers),)  # all layers in one trial

    monkeypatch.setattr(FAMILIES, "_items", dict(FAMILIES._items))
    register_family(Probe)
    return Probe


def test_attack_entries_are_validated_by_their_family(workdir, probe_family):
    spec = load_spec(edited({"attacks[3]": {"name": "probe-up", "images": 3}}))
    assert spec.attacks[3] == probe_family.config(name="probe-up", images=3)
    assert spec.trial_count() == 3 * 2 + 1  # the family decides how an entry expands over the layers
    doc = edited(
        {"attacks[2].images": 5, "attacks[3]": {"name": "probe-up", "k": 3}, "attacks[1].name": "pushdown"}
    )
    with pytest.raises(SpecError) as err:
        load_spec(doc)
    msg = str(err.value)
    assert problem_lines(msg, "attacks[2].images", "'probe' (attacks: probe-up), not of family 'featureviz'")
    assert problem_lines(msg, "attacks[3].k", "a setting of family 'featureviz'")
    assert problem_lines(
        msg,
        "attacks[1].name",
        "valid attacks: finetune, push-down, push-up, push-up-pairwise, pgd, adv2, pse, probe-up",
    )


def test_the_committed_json_schema_is_the_commands_output(capsys):
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert (ROOT / "docs" / "sweep.schema.json").read_text() == out, (
        "run: vizsweep schema > docs/sweep.schema.json"
    )
    schema = json.loads(out)
    attack = schema["properties"]["attacks"]["items"]
    assert (
        attack["discriminator"]["propertyName"] == "name" and "push-up" in attack["discriminator"]["mapping"]
    )
    for path in [*ROOT.glob("examples/*.yaml"), *ROOT.glob("sweeps/*.yaml")]:
        assert path.read_text().startswith("# yaml-language-server: $schema=../docs/sweep.schema.json\n"), (
            path
        )


# --- YAML read safely ---------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_fast_in_bounded_memory(workdir):
    import time
    import tracemalloc

    path = write_case(workdir, alias_bomb())
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as err:
        load_spec(path)
    seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 5 and peak < 50 * 2**20, (seconds, peak)
    assert "more than 100,000 nodes once its aliases (*name) are expanded" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nloop: &a [1, *a]\n", "recursive alias: the node at line 2 contains an alias of itself"),
        ("name: x\ndeep: " + "[" * 60 + "]" * 60 + "\n", "nested deeper than 50 levels"),
        ("name: x\ndeeper: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 50 levels"),
        (
            "name: x\nd: &d "
            + "[" * 30
            + "]" * 30
            + "\ne: [[[[[[[[[[[[[[[[[[[[[[[[[*d]]]]]]]]]]]]]]]]]]]]]]]]]\n",
            "deeper",
        ),
    ],
    ids=["recursive-alias", "too-deep", "far-too-deep", "deep-through-an-alias"],
)
def test_hostile_yaml_is_refused_with_the_limit_named(workdir, text, message):
    with pytest.raises(SpecError) as err:
        load_spec(write_case(workdir, text))
    assert len(err.value.problems) == 1 and message in err.value.problems[0], err.value


def test_aliases_within_the_limits_still_work_and_keep_lines(workdir):
    text = EXAMPLE.read_text().replace(
        "  - name: push-down              #", "  - &pd\n    name: push-down     #"
    )
    text += "extra: *pd\n"
    with pytest.raises(SpecError) as err:
        load_spec(write_case(workdir, text))
    assert [p.split(":")[0] for p in err.value.problems] == [f"extra (line {text.count(chr(10))})"]


def test_validate_answers_a_syntax_error_without_torch_or_ray(workdir):
    bad = write_case(workdir, "name: x\nlayers: [conv3\n")
    script = (
        "import sys, time; t = time.perf_counter(); from orchestrator.cli import main; "
        f"code = main(['validate', {str(bad)!r}]); "
        "print('result', code, [m for m in ('torch', 'ray', 'pydantic') if m in sys.modules], time.perf_counter() - t)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=300, env=_env()
    )
    code, modules = proc.stdout.split()[1], proc.stdout.split("[")[1].split("]")[0]
    assert code == "2" and "torch" not in modules and "ray" not in modules, proc.stdout + proc.stderr
    assert "YAML syntax error at line 3" in proc.stderr


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}
