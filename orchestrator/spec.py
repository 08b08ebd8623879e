"""The sweep spec: one YAML file -> frozen, typed dataclasses, rejected before Ray starts.

A sweep runs for hours on rented GPUs, so every mistake that the file alone shows
(a misspelt key, an unknown model or layer, α >= 1) or that this machine shows (a
missing dataset or checkpoint, a GPU that is not there) must surface before
``ray.init``. Hence this module imports neither Ray nor MLflow, collects *all*
problems into one :class:`SpecError` (one per line, each named by its dotted path,
e.g. ``attacks[1].name``, with its YAML line when known), and reuses the library's
own validators (model/attack/embedder registries, ``ModelInfo.resolve_layer``,
``AlphaConfig``, ``shared.datasets.list_shards``) so their rules and messages stay
in one place.

- :func:`load_spec` checks what the file alone decides (types, keys, registries).
- :func:`validate_spec` checks what this machine decides (paths exist, resources
  are possible); ``vizsweep validate`` runs both and reports them together.

Relative paths are resolved against the current working directory and kept as
absolute ``file://`` URIs (``shared.store.normalize``); ``s3://`` URIs stay as given.
PyYAML reads YAML 1.1, where ``1e-4`` (no dot) is a string: number fields accept
numeric strings, so ``lr: 1e-4`` means what its author meant.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

import torch
import yaml

from shared import store
from shared.alpha import AlphaConfig
from shared.attacks import SCALES, get_attack
from shared.datasets import DatasetError, list_shards
from shared.embedders import parse_spec
from shared.models.zoo import _WEIGHTS_NAME, LayerError, ModelInfo, model_info, model_names
from shared.registry import RegistryError
from shared.synth import class_names

SCOPES = ("layer", "unit", "layers")  # one layer per trial | chosen units per trial | all layers in one trial
PRUNING_METHODS = ("none", "norm", "group", "vulnerability")  # SCIENCE.md §4
PRETRAIN = "pretrain"  # weights: train the model with the project's pretrain job
REFERENCE_EMBEDDER = "reference"  # embedder: the offline reference encoder the launcher trains
NAME_PATTERN = r"[A-Za-z0-9_.-]+"  # MLflow experiment names and sweep ids stay safe in paths and URLs
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_BAD = object()  # a value whose problem is already recorded


class SpecError(ValueError):
    """A sweep spec cannot be used; the message lists every problem, one per line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the sweep spec{lines}")


class _Invalid(ValueError):
    """Raised by ``__post_init__``: (field path relative to the object, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))


def _opt(default: Any = dataclasses.MISSING, **rules: Any) -> Any:
    """A field plus the reader's rules: ge/gt/le/lt, choices, pattern, uri, check, nonempty, unique,
    words (literal strings a number field also takes) and hint (shown when a required field is missing)."""
    return field(default=default, metadata=rules)


# --- the spec ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SynthSpec:
    """Arguments of ``shared.synth.generate``: the launcher writes this dataset when ``uri`` holds none."""

    classes: int = _opt(16, check=class_names)  # number of classes (shapes x colours x textures)
    train_per_class: int = _opt(300, ge=1)  # training images per class
    val_per_class: int = _opt(50, ge=1)  # validation images per class
    size: int = _opt(64, ge=16)  # image side in pixels
    seed: int = _opt(0, ge=0)  # generator seed


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Where the images are; with ``synth`` the path need not exist yet."""

    uri: str = _opt(uri=True, hint="a dataset root: local path, file:// or s3:// URI")
    synth: SynthSpec | None = None  # generate the synthetic dataset at uri when it holds none
    train_split: str = "train"  # D: trained on, and its top-k sets are attacked
    val_split: str = "val"  # V: accuracy, α's held-out subset and D_τ come from here


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A base model: a registered name and where its weights come from (see :func:`weights_kind`)."""

    name: str = _opt(check=model_info, hint="a registered model, e.g. alexnet_mini")
    weights: str = _opt(hint="'pretrain', torchvision weights (IMAGENET1K_V1) or a checkpoint path / URI")

    def __post_init__(self) -> None:
        try:
            info = model_info(self.name)
        except RegistryError as e:
            raise _Invalid([("name", str(e))]) from None
        problem = _weights_problem(info, self.weights)
        if problem:
            raise _Invalid([("weights", problem)])
        if self.weights_kind == "checkpoint":
            object.__setattr__(self, "weights", store.normalize(self.weights))

    @property
    def weights_kind(self) -> str:
        return weights_kind(self.weights)


@dataclass(frozen=True, kw_only=True)
class PruningSpec:
    """A pruning defense applied to the base model before it is attacked."""

    method: str = _opt("none", choices=PRUNING_METHODS)  # none | norm | group | vulnerability
    rate: float = _opt(0.0, ge=0.0, lt=1.0)  # norm: share of weights; group: share of units per layer
    priority: str = _opt("filter", choices=("filter", "weight"))  # group: conv filters or FC neurons
    count: int = _opt(0, ge=0)  # vulnerability: units removed (the top CLIP-δ of a push-down run)
    layer: str = "conv5"  # vulnerability: the layer whose units are ranked and removed
    epochs: int = _opt(1, ge=1)  # fine-tuning passes after pruning (thesis: 20)
    lr: float = _opt(1e-5, gt=0)  # Adam; x0.1 from half-way (thesis: 1e-5 then 1e-6)
    sparse_epochs: int = _opt(1, ge=1)  # group: group-sparse training before the removal

    def __post_init__(self) -> None:
        if self.method == "none" and (self.rate != 0 or self.count):
            raise _Invalid([("rate", f"method 'none' prunes nothing, so rate must be 0.0, not {self.rate}")])
        if self.method in ("norm", "group") and not self.rate > 0:
            raise _Invalid([("rate", f"method {self.method!r} needs a rate in (0, 1), e.g. 0.5")])
        if self.method == "vulnerability" and (self.count < 1 or self.rate):
            raise _Invalid(
                [("count", "method 'vulnerability' needs count >= 1 (units to remove) and no rate")]
            )


@dataclass(frozen=True, kw_only=True)
class AttackEntry:
    """One attack and its scope. Units listed together are attacked together, in one trial per layer."""

    name: str = _opt(check=get_attack, hint="finetune, push-down or push-up")  # registered attack
    scope: str = _opt("layer", choices=SCOPES)  # layer | unit (needs units) | layers (all at once)
    units: tuple[int, ...] | None = _opt(None, ge=0, nonempty=True, unique=True)  # unit indices

    def __post_init__(self) -> None:
        if self.scope == "unit" and self.units is None:
            raise _Invalid([("units", "scope 'unit' needs units: [j, ...] (unit indices in each layer)")])
        if self.scope != "unit" and self.units is not None:
            msg = f"units apply to scope 'unit' only, not {self.scope!r}; set scope: unit or drop units"
            raise _Invalid([("units", msg)])
        if self.units is not None:  # [3, 1] and [1, 3] are one attack: same key, same duplicate check
            object.__setattr__(self, "units", tuple(sorted(self.units)))

    def layer_groups(self, layers: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """The layer scope of each trial: every layer alone, or for scope 'layers' all of them at once."""
        return (tuple(layers),) if self.scope == "layers" else tuple((layer,) for layer in layers)


@dataclass(frozen=True, kw_only=True)
class TrainingSpec:
    """The attack's training loop; field names are those of ``jobs.attack.AttackSpec``."""

    lr: float = _opt(1e-4, gt=0)  # Adam learning rate
    batch_size: int = _opt(64, ge=1)  # training images per step
    epochs: int = _opt(2, ge=1)  # passes over the train split
    max_steps: int | None = _opt(None, ge=1)  # stop after this many steps (null: epochs x steps per epoch)
    evals_per_epoch: int = _opt(10, ge=1)  # evaluation intervals per epoch (α update, checkpoint)
    eval_images: int = _opt(2000, ge=1)  # held-out images that measure the accuracy drop
    k: int = _opt(10, ge=1)  # D_attack: the initial top-k images of each unit
    scale: str = _opt("unit", choices=SCALES)  # "unit": L_A divided by s_j; "none": raw loss
    decoy_class: int = _opt(1, ge=0)  # push-up: label of the decoy class
    decoy_images: int = _opt(100, ge=1)  # push-up: decoy images drawn from that class
    amp: bool = False  # bf16 autocast


@dataclass(frozen=True, kw_only=True)
class MetricsSettings:
    """The metrics stage; field names are those of ``jobs.metrics.MetricsSpec``."""

    embedder: str = _opt(REFERENCE_EMBEDDER, check=lambda s: s == REFERENCE_EMBEDDER or parse_spec(s))
    k: int = _opt(10, ge=1)  # size of the top-k sets compared before/after
    tau_images: int = _opt(10_000, ge=1)  # |D_τ| for Kendall-τ
    splits: tuple[str, ...] | None = _opt(None, nonempty=True, unique=True)  # null: the dataset's two splits
    picture_units: int = _opt(4, ge=0)  # units in the before/after picture (0: none)


@dataclass(frozen=True, kw_only=True)
class ResourcesSpec:
    """What one trial reserves on the Ray cluster."""

    cpus_per_trial: float = _opt(1.0, gt=0)
    gpus_per_trial: float | str = _opt("auto", ge=0, words=("auto",))  # auto: 1 if the cluster has GPUs


def _cross_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Checks that involve several sections; sections that failed on their own are skipped."""
    out: list[tuple[str, str]] = []
    models, layers, ds, metrics = v.get("models"), v.get("layers"), v.get("dataset"), v.get("metrics")
    if isinstance(models, tuple) and isinstance(layers, tuple):
        for j, layer in enumerate(layers):
            for i, m in enumerate(models):
                if layer is None or m is None:  # a failed entry, already reported
                    continue
                try:
                    model_info(m.name).resolve_layer(layer)
                except LayerError as e:
                    out.append((f"layers[{j}]", f"{e} (models[{i}]; each layer must exist in every model)"))
    if isinstance(ds, DatasetSpec) and ds.synth is not None:
        for attr, want in (("train_split", "train"), ("val_split", "val")):
            if getattr(ds, attr) != want:
                msg = f"the synthetic dataset (dataset.synth) has splits 'train' and 'val', not {getattr(ds, attr)!r}"
                out.append((f"dataset.{attr}", f"{msg}; drop {attr} or the synth block"))
    if isinstance(ds, DatasetSpec) and isinstance(metrics, MetricsSettings) and metrics.splits:
        for k, split in enumerate(metrics.splits):
            if split not in (ds.train_split, ds.val_split):
                msg = f"{split!r} is neither dataset.train_split ({ds.train_split!r}) nor dataset.val_split"
                out.append((f"metrics.splits[{k}]", f"{msg} ({ds.val_split!r})"))
    return out


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A whole sweep. Build it with :func:`load_spec`; it is frozen and hashable, :meth:`to_dict` is JSON-able."""

    name: str = _opt(pattern=NAME_PATTERN, hint="e.g. name: quickstart")  # MLflow experiment, sweep id prefix
    store: str = _opt("./vizsweep-store", uri=True)  # local path, file:// or s3://bucket/prefix
    tracking_uri: str | None = None  # MLflow; null: see default_tracking_uri
    dataset: DatasetSpec = _opt(hint="e.g. dataset: {uri: ./data, synth: {}}")
    models: tuple[ModelSpec, ...] = _opt(
        nonempty=True, unique=True, hint="e.g. [{name: alexnet_mini, weights: pretrain}]"
    )
    layers: tuple[str, ...] = _opt(nonempty=True, unique=True, hint="e.g. layers: [conv3, conv5]")
    attacks: tuple[AttackEntry, ...] = _opt(nonempty=True, unique=True, hint="e.g. [{name: push-down}]")
    pruning: tuple[PruningSpec, ...] = _opt((PruningSpec(),), nonempty=True, unique=True)
    seeds: tuple[int, ...] = _opt((0,), ge=0, nonempty=True, unique=True)
    alpha: AlphaConfig = AlphaConfig()  # the α rule (shared.alpha)
    training: TrainingSpec = TrainingSpec()
    metrics: MetricsSettings = MetricsSettings()
    resources: ResourcesSpec = ResourcesSpec()
    max_failures: int = _opt(2, ge=0)  # Tune FailureConfig retries per trial
    ray_address: str | None = None  # null: local Ray, or the cluster in RAY_ADDRESS

    _partial_problems = staticmethod(_cross_problems)  # lets the reader report them beside other problems

    def __post_init__(self) -> None:
        if self.tracking_uri is None:
            object.__setattr__(self, "tracking_uri", default_tracking_uri(self.store))
        if self.metrics.splits is None:
            splits = (self.dataset.train_split, self.dataset.val_split)
            object.__setattr__(self, "metrics", dataclasses.replace(self.metrics, splits=splits))
        problems = _cross_problems(vars(self))
        if problems:
            raise _Invalid(problems)

    def trial_count(self) -> int:
        """Attack trials: models x pruning x seeds x (per attack: one per layer, or one for scope 'layers')."""
        per_attack = sum(len(a.layer_groups(self.layers)) for a in self.attacks)
        return len(self.models) * len(self.pruning) * len(self.seeds) * per_attack

    def trial_formula(self) -> str:
        """How :meth:`trial_count` arises, e.g. '1 model × 1 pruning setting × 1 seed × 2 layers × 3 attacks'."""
        head = [_count(len(self.models), "model"), _count(len(self.pruning), "pruning setting")]
        head.append(_count(len(self.seeds), "seed"))
        groups = [len(a.layer_groups(self.layers)) for a in self.attacks]
        if len(set(groups)) == 1:
            unit = "layer set" if self.attacks[0].scope == "layers" else "layer"
            tail = [_count(groups[0], unit), _count(len(self.attacks), "attack")]
        else:
            tail = [f"({' + '.join(map(str, groups))}) layer scopes of {len(self.attacks)} attacks"]
        return " × ".join(head + tail)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists, not tuples) that :func:`load_spec` reads back to an equal spec."""
        return _plain(dataclasses.asdict(self))


def weights_kind(weights: str) -> str:
    """'pretrain', 'torchvision' or 'checkpoint', by the rule ``shared.models.build_model`` applies."""
    if weights == PRETRAIN:
        return "pretrain"
    if _WEIGHTS_NAME.match(weights) and not os.path.exists(weights):
        return "torchvision"
    return "checkpoint"


def default_tracking_uri(store_uri: str) -> str:
    """The sqlite database that belongs to a store: next to a local store, in the cwd for S3.

    A local store keeps its runs with its data, so moving or deleting the folder moves or
    deletes both. An S3 store cannot hold a sqlite file, so the database stays where the user
    launched the sweep (a cluster names its MLflow server in tracking_uri instead).
    """
    local = store.local_path(store_uri)
    folder = local if local is not None else os.getcwd()
    return f"sqlite:///{os.path.abspath(folder)}/mlflow.db"


def _weights_problem(info: ModelInfo, weights: str) -> str | None:
    kind = weights_kind(weights)
    checkpoint = "a checkpoint path / file:// / s3:// URI"
    if kind == "pretrain" and info.weights_enum_name is not None:
        # The pretrain job trains from scratch in minutes: meant for the small models torchvision lacks.
        small = [n for n in model_names() if model_info(n).weights_enum_name is None]
        return (
            f"'pretrain' trains from scratch and is for the small models ({', '.join(small)}); for "
            f"{info.name!r} give torchvision weights ({', '.join(info.weights_enum.__members__)}) or {checkpoint}"
        )
    if kind == "torchvision" and info.weights_enum_name is None:
        return f"{weights!r} is a torchvision weights name, but {info.name!r} has none; use 'pretrain' or {checkpoint}"
    if kind == "torchvision":
        try:
            info.weights_enum.verify(weights)
        except (KeyError, ValueError):
            members = ", ".join(info.weights_enum.__members__)
            return f"unknown torchvision weights {weights!r} for {info.name!r}; valid: {members}, or {checkpoint}"
    if kind == "checkpoint":
        try:
            store.normalize(weights)
        except store.StoreError as e:
            return str(e)
    return None


# --- loading -----------------------------------------------------------------------


def load_spec(source: str | os.PathLike | Mapping[str, Any], *, check_environment: bool = False) -> SweepSpec:
    """Read a sweep spec from a YAML file (path, file:// or s3://) or a dict; raise one :class:`SpecError`.

    ``check_environment=True`` adds :func:`validate_spec`'s checks to the same report.
    """
    label, data, node = _read(source)
    lines, duplicates = _line_index(node)
    reader = _Reader(lines)
    for path, msg in duplicates:
        reader.add(path, msg)
    if not isinstance(data, dict):
        reader.add("", f"a sweep spec is a mapping (name:, dataset:, models:, ...), got {_describe(data)}")
        raise SpecError(label, reader.problems)
    values = reader.fields(SweepSpec, data, "")
    spec = reader.build(SweepSpec, values, "")
    if check_environment:
        for path, msg in _environment_problems(reader.salvage(values, "")):
            reader.add(path, msg)
    if reader.problems:
        raise SpecError(label, reader.problems)
    return spec


def validate_spec(spec: SweepSpec) -> None:
    """The checks this machine decides: dataset, checkpoints and reference embedder exist; resources fit."""
    problems = _environment_problems(vars(spec))
    if problems:
        raise SpecError(f"sweep {spec.name!r}", [f"{path}: {msg}" for path, msg in problems])


def _read(source: str | os.PathLike | Mapping[str, Any]) -> tuple[str, Any, yaml.Node | None]:
    if isinstance(source, Mapping):
        return "<dict>", dict(source), None
    label = os.fspath(source)
    try:
        text = store.read_bytes(label).decode("utf-8")
    except (OSError, UnicodeDecodeError, store.StoreError) as e:
        raise SpecError(label, [f"cannot read the spec: {e}"]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        raise SpecError(label, [_yaml_problem(e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(label, [f"YAML error: {e}"]) from None
    finally:
        loader.dispose()
    if data is None:
        msg = "the file is empty; a sweep spec needs at least name, dataset, models, layers and attacks"
        raise SpecError(label, [f"{msg} (see examples/quickstart.yaml)"])
    return label, data, node


def _yaml_problem(e: yaml.MarkedYAMLError) -> str:
    """'YAML syntax error at line 3, column 1: <problem> (<context> at line 2)'."""
    mark, context = e.problem_mark or e.context_mark, e.context or ""
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    if context and e.context_mark is not None and e.problem_mark is not None:
        context += f" at line {e.context_mark.line + 1}"
    detail = f"{e.problem} ({context})" if e.problem and context else e.problem or context
    return f"YAML syntax error{where}: {detail}"


def _line_index(node: yaml.Node | None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Dotted path -> YAML line, and the keys written twice (PyYAML silently keeps the last)."""
    lines: dict[str, int] = {}
    duplicates: list[tuple[str, str]] = []

    def walk(n: yaml.Node, path: str, depth: int) -> None:
        if depth > 50:  # anchors can make a graph with cycles; a spec is never this deep
            return
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in n.value:
                name, line = str(key.value), key.start_mark.line + 1
                sub = _join(path, name)
                if name in seen:
                    msg = f"key {name!r} appears twice (lines {seen[name]} and {line}); YAML keeps the last"
                    duplicates.append((sub, f"{msg}, so delete one"))
                seen[name] = line
                lines[sub] = line
                walk(value, sub, depth + 1)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, f"{path}[{i}]", depth + 1)

    if node is not None:
        walk(node, "", 0)
    return lines, duplicates


class _Reader:
    """Reads raw YAML values into the spec's dataclasses, recording every problem with its path."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self.problems: list[str] = []
        self.partial: dict[str, tuple[Any, ...]] = {}  # path -> a failed list's items, None where bad

    def salvage(self, values: dict[str, Any], path: str) -> dict[str, Any]:
        """Failed lists replaced by their good items, so later checks still see those."""
        return {k: self.partial.get(_join(path, k), v) if v is _BAD else v for k, v in values.items()}

    def add(self, path: str, message: str) -> Any:
        line, p = None, path
        while p and line is None:  # a missing key has no line: use its parent's
            line, p = self.lines.get(p), _parent(p)
        where = (path or "(top level)") + (f" (line {line})" if line else "")
        self.problems.append(f"{where}: {message}")
        return _BAD

    def value(self, tp: Any, raw: Any, path: str, rules: Mapping[str, Any]) -> Any:
        tp, optional = _unwrap(tp)
        if raw is None:
            return None if optional else self.add(path, f"must not be null; expected {_expected(tp, rules)}")
        if isinstance(raw, str) and raw in rules.get("words", ()):
            return raw
        if dataclasses.is_dataclass(tp):
            if not isinstance(raw, dict):
                return self.add(path, f"expected a mapping ({', '.join(_hints(tp))}), got {_describe(raw)}")
            return self.build(tp, self.fields(tp, raw, path), path)
        if get_origin(tp) is tuple:
            return self.sequence(get_args(tp)[0], raw, path, rules)
        value = self.scalar(tp, raw, path, rules)
        return value if value is _BAD else self.check(value, path, rules)

    def scalar(self, tp: type, raw: Any, path: str, rules: Mapping[str, Any]) -> Any:
        if tp is float and isinstance(raw, str) and _NUMBER.match(raw.strip()):
            raw = float(raw)
        number = isinstance(raw, int | float) and not isinstance(raw, bool)
        if tp is float and number and math.isfinite(raw):
            return float(raw)
        if (tp is int and number and isinstance(raw, int)) or (tp is bool and isinstance(raw, bool)):
            return raw
        if tp is str and isinstance(raw, str) and raw.strip():
            return raw
        return self.add(path, f"expected {_expected(tp, rules)}, got {_describe(raw)}")

    def check(self, value: Any, path: str, rules: Mapping[str, Any]) -> Any:
        for rule, (fails, words) in _LIMITS.items():
            if rule in rules and fails(value, rules[rule]):
                return self.add(path, f"must be {words} {rules[rule]}, got {value!r}")
        if "choices" in rules and value not in rules["choices"]:
            valid = ", ".join(rules["choices"])
            return self.add(path, f"{value!r} is not one of: {valid}{_did_you_mean(value, rules['choices'])}")
        if "pattern" in rules and not re.fullmatch(rules["pattern"], value):
            return self.add(path, f"{value!r}: use only letters, digits, '_', '.' and '-'")
        try:
            if rules.get("uri"):
                value = store.normalize(value)
            if "check" in rules:
                rules["check"](value)
        except (ValueError, KeyError, store.StoreError) as e:
            return self.add(path, str(e))
        return value

    def sequence(self, item_tp: Any, raw: Any, path: str, rules: Mapping[str, Any]) -> Any:
        if not isinstance(raw, list):
            hint = f"; write [{raw}]" if isinstance(raw, str | int | float) else ""
            return self.add(path, f"expected a list, got {_describe(raw)}{hint}")
        if not raw and rules.get("nonempty"):
            return self.add(path, "must not be empty" + (f" ({rules['hint']})" if "hint" in rules else ""))
        item_rules = {k: v for k, v in rules.items() if k not in ("nonempty", "unique", "hint")}
        items = [self.value(item_tp, x, f"{path}[{i}]", item_rules) for i, x in enumerate(raw)]
        if any(x is _BAD for x in items):  # keep the good ones (by index) for the cross-section checks
            self.partial[path] = tuple(None if x is _BAD else x for x in items)
            return _BAD
        first: dict[Any, int] = {}
        for i, x in enumerate(items):
            if rules.get("unique") and x in first:
                return self.add(f"{path}[{i}]", f"repeats {path}[{first[x]}]; each runs once, so remove one")
            first.setdefault(x, i)
        return tuple(items)

    def fields(self, cls: type, raw: dict, path: str) -> dict[str, Any]:
        hints, fields = _hints(cls), {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                self.add(_join(path, str(key)), _unknown_key(cls, key))
        values: dict[str, Any] = {}
        for name, f in fields.items():
            sub = _join(path, name)
            if name in raw:
                values[name] = self.value(hints[name], raw[name], sub, f.metadata)
            elif f.default is dataclasses.MISSING:
                hint = f" ({f.metadata['hint']})" if "hint" in f.metadata else ""
                values[name] = self.add(sub, f"missing; it is required{hint}")
            else:
                values[name] = store.normalize(f.default) if f.metadata.get("uri") else f.default
        return values

    def build(self, cls: type, values: dict[str, Any], path: str) -> Any:
        if any(v is _BAD for v in values.values()):
            for sub, msg in getattr(cls, "_partial_problems", lambda _: [])(self.salvage(values, path)):
                self.add(_join(path, sub), msg)
            return _BAD
        try:
            return cls(**values)
        except _Invalid as e:
            for sub, msg in e.problems:
                self.add(_join(path, sub), msg)
        except ValueError as e:  # AlphaConfig's own: "AlphaConfig.alpha_max=1.0: must be in (0, 1) ..."
            m = re.match(r"^\w+\.(\w+)=(.*)$", str(e), re.S)
            self.add(_join(path, m.group(1)) if m else path, m.group(2) if m else str(e))
        return _BAD


_LIMITS = {
    "ge": (operator.lt, ">="),
    "gt": (operator.le, ">"),
    "le": (operator.gt, "<="),
    "lt": (operator.ge, "<"),
}
_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a non-empty string"}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(type, optional): ``X | None`` -> (X, True); other unions read as their first type
    (their literal alternatives, like gpus_per_trial's 'auto', come from the 'words' rule)."""
    args = get_args(tp) if get_origin(tp) is not tuple else ()
    if not args:
        return tp, False
    rest = [a for a in args if a is not type(None)]
    return rest[0], len(rest) < len(args)


def _expected(tp: Any, rules: Mapping[str, Any]) -> str:
    word = "a list" if get_origin(tp) is tuple else _WORDS.get(tp, "a mapping")
    return word + "".join(f" or {w!r}" for w in rules.get("words", ()))


def _describe(raw: Any) -> str:
    if isinstance(raw, str):
        return f"the string {raw!r}"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return {list: "a list", dict: "a mapping"}.get(type(raw), repr(raw))


def _unknown_key(cls: type, key: Any) -> str:
    names = list(_hints(cls))
    hint = _did_you_mean(str(key), names)
    for name, tp in _hints(cls).items():  # a key written one level too high, e.g. lr: beside training:
        inner = _unwrap(tp)[0]
        if not hint and dataclasses.is_dataclass(inner) and key in _hints(inner):
            hint = f"; it belongs under {name}: ({name}.{key})"
    return f"unknown key {key!r}" + (hint or f"; valid keys: {', '.join(names)}")


def _did_you_mean(value: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _parent(path: str) -> str:
    return re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path) if re.search(r"[.\[]", path) else ""


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


# --- what this machine decides -----------------------------------------------------------


def _environment_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Filesystem and machine checks on whatever sections parsed (bad ones are already reported)."""
    out: list[tuple[str, str]] = []
    ds, models, metrics, res = v.get("dataset"), v.get("models"), v.get("metrics"), v.get("resources")
    if isinstance(ds, DatasetSpec) and ds.synth is None:
        out += _dataset_problems(ds)
    for i, m in enumerate(models if isinstance(models, tuple) else ()):
        why = _missing(m.weights) if m is not None and m.weights_kind == "checkpoint" else None
        if why:
            msg = f"{why}; give an existing checkpoint, 'pretrain' or torchvision weights"
            out.append((f"models[{i}].weights", msg))
    if isinstance(metrics, MetricsSettings) and metrics.embedder.startswith(f"{REFERENCE_EMBEDDER}:"):
        why = _missing(metrics.embedder.partition(":")[2])
        if why:
            msg = "; give an existing checkpoint, or plain 'reference' to let the launcher train one"
            out.append(("metrics.embedder", f"reference encoder {why}{msg}"))
    if isinstance(res, ResourcesSpec) and v.get("ray_address") is None and not os.environ.get("RAY_ADDRESS"):
        out += _resource_problems(res)
    return out


def _missing(uri: str) -> str | None:
    try:
        return None if store.exists(uri) else f"{store.normalize(uri)} does not exist"
    except (OSError, store.StoreError) as e:
        return f"cannot check {uri}: {e}"


def _dataset_problems(ds: DatasetSpec) -> list[tuple[str, str]]:
    why = _missing(ds.uri)
    if why:
        return [("dataset.uri", f"{why}; point uri at a dataset, or add `synth: {{}}` to generate one there")]
    out = []
    for attr in ("train_split", "val_split"):
        try:
            list_shards(ds.uri, getattr(ds, attr))
        except (DatasetError, OSError, store.StoreError) as e:
            out.append((f"dataset.{attr}", str(e)))
    return out


def _resource_problems(res: ResourcesSpec) -> list[tuple[str, str]]:
    """Ray would leave a trial that asks for more than a local node has PENDING forever: say so now."""
    out = []
    gpus, cpus = torch.cuda.device_count(), os.cpu_count() or 1
    local = "ray_address is null, so Ray runs on this machine"
    if res.gpus_per_trial != "auto" and res.gpus_per_trial > gpus:
        msg = f"impossible resources: a trial asks for {res.gpus_per_trial:g} GPU(s), {gpus} visible "
        fix = "use gpus_per_trial: auto (1 with a GPU, else 0) or 0, or a ray_address of a GPU cluster"
        out.append(("resources.gpus_per_trial", f"{msg}(torch.cuda.device_count()) and {local}; {fix}"))
    if res.cpus_per_trial > cpus:
        msg = f"impossible resources: a trial asks for {res.cpus_per_trial:g} CPUs, this machine has {cpus}"
        out.append(("resources.cpus_per_trial", f"{msg} and {local}; use at most {cpus} or set ray_address"))
    return out
