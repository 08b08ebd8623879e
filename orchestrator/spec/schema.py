"""The sweep spec's models: frozen pydantic v2 models, unknown keys fatal (ARCHITECTURE.md "Sweep spec").

One model per section, one commented field per setting. ``attacks[i]`` is the discriminated
union (on ``name``) of every registered attack family's config (``shared.attacks.config_models``),
so a family's settings (``k``, ``scale``, the decoy set, ...) sit on its entries and are typed
once, by the family. :func:`spec_model` rebuilds the union when a family registered after import.
Validators reuse the library's own checks (model registry, ``ModelInfo.resolve_layer``,
``AlphaConfig``, ``shared.store.normalize``) so their rules and messages stay in one place.
Relative paths become absolute ``file://`` URIs, resolved against the current directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.spec.messages import Problems, Repeated, describe, shown
from orchestrator.spec.sizes import attack_problems, size_problems, synth_facts
from orchestrator.spec.tracking_uri import tracking_scheme_problem
from shared import store
from shared.alpha import AlphaConfig
from shared.attacks import (
    BASE,
    AttackConfig,
    ConfigProblem,
    config_models,
    family_of,
    starting_models,
    store_trials,
)
from shared.attacks.family import MAX_IMAGES
from shared.embedders import parse_spec
from shared.models.zoo import _WEIGHTS_NAME, LayerError, ModelInfo, model_info, model_names
from shared.registry import RegistryError
from shared.synth import class_names
from shared.uris import uri_problem

PRUNING_METHODS = ("none", "norm", "group", "vulnerability")  # SCIENCE.md §4
PRETRAIN = "pretrain"  # weights: train the model with the project's pretrain job
REFERENCE_EMBEDDER = "reference"  # embedder: the offline reference encoder the launcher trains
# MLflow experiment names and sweep ids stay safe in paths and URLs (and never climb a folder: no "..")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAME = re.compile(rf"^{NAME_PATTERN}$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
AttackEntry = AttackConfig  # the type of one attacks[i] entry: a family's config (see _FamilyUnion)


def _number(v: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: a number field takes numeric strings as meant."""
    return float(v) if isinstance(v, str) and _NUMBER.match(v.strip()) else v


def _uri(v: str) -> str:
    problem = uri_problem(v)
    if problem:
        raise ValueError(problem)
    try:
        return store.normalize(v)
    except store.StoreError as e:
        raise ValueError(str(e)) from None


def _unique(v: tuple | None) -> tuple | None:
    first: dict[Any, int] = {}
    for i, x in enumerate(v or ()):
        if x in first:
            raise Repeated(i, first[x])
        first[x] = i
    return v


def _gpus(v: Any) -> Any:
    v = _number(v)
    if v == "auto" or (isinstance(v, int | float) and not isinstance(v, bool) and v >= 0):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(f"must be >= 0 or 'auto', got {v!r}")
    raise ValueError(f"expected a number or 'auto', got {describe(v)}")


Float = Annotated[float, BeforeValidator(_number)]
Text = Annotated[str, Field(min_length=1)]
Uri = Annotated[str, Field(min_length=1), AfterValidator(_uri)]
GpuCount = Annotated[Annotated[float, Field(ge=0)] | Literal["auto"], BeforeValidator(_gpus)]


class _FamilyUnion:
    """Pydantic hook: the discriminated union on ``name`` of every registered family's config."""

    built: tuple[type[AttackConfig], ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        models = config_models()
        _FamilyUnion.built = models
        union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007
        return handler.generate_schema(Annotated[union, Field(discriminator="name")])


def _list(item: Any, unique: bool = True, **rules: Any) -> Any:
    """A YAML list of ``item``: not empty, each item once."""
    return Annotated[
        tuple[item, ...], Field(min_length=1, **rules), *([AfterValidator(_unique)] if unique else [])
    ]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SynthSpec(_Section):
    """Arguments of ``shared.synth.generate``: the launcher writes this dataset when ``uri`` holds none."""

    classes: int = 16  # number of classes (shapes x colours x textures)
    train_per_class: int = Field(300, ge=1)  # training images per class
    val_per_class: int = Field(50, ge=1)  # validation images per class
    size: int = Field(64, ge=16)  # image side in pixels
    seed: int = Field(0, ge=0)  # generator seed

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: int) -> int:
        class_names(v)  # "must be between 1 and N (shapes x colours x textures)"
        return v


class DatasetSpec(_Section):
    """Where the images are; with ``synth`` the path need not exist yet."""

    uri: Uri = Field(description="a dataset root: local path, file:// or s3:// URI")
    synth: SynthSpec | None = None  # generate the synthetic dataset at uri when it holds none
    train_split: Text = "train"  # D: trained on, and its top-k sets are attacked
    val_split: Text = "val"  # V: accuracy, α's held-out subset and D_τ come from here

    @model_validator(mode="after")
    def _synth_splits(self) -> DatasetSpec:
        if self.synth is None:
            return self
        want = {"train_split": "train", "val_split": "val"}
        wrong = [(a, getattr(self, a)) for a, split in want.items() if getattr(self, a) != split]
        msg = "the synthetic dataset (dataset.synth) has splits 'train' and 'val', not {!r}; drop {} or the synth block"
        if wrong:
            raise Problems([(a, msg.format(v, a)) for a, v in wrong])
        return self


class ModelSpec(_Section):
    """A base model: a registered name and where its weights come from (see :func:`weights_kind`)."""

    name: Text = Field(description="a registered model, e.g. alexnet_mini")
    weights: Text = Field(
        description="'pretrain', torchvision weights (IMAGENET1K_V1) or a checkpoint path / URI"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            model_info(v)
        except RegistryError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str, info: ValidationInfo) -> str:
        if "name" not in info.data:  # the name's problem is reported already
            return v
        problem = _weights_problem(model_info(info.data["name"]), v)
        if problem:
            raise ValueError(problem)
        return store.normalize(v) if weights_kind(v) == "checkpoint" else v

    @property
    def weights_kind(self) -> str:
        return weights_kind(self.weights)


class PruningSpec(_Section):
    """A pruning defense applied to the base model before it is attacked (SCIENCE.md §4)."""

    method: Literal["none", "norm", "group", "vulnerability"] = "none"  # see PRUNING_METHODS
    rate: Float = Field(0.0, ge=0.0, lt=1.0)  # norm: share of weights; group: share of units per layer
    priority: Literal["filter", "weight"] = "filter"  # group: conv filters or FC neurons
    count: int = Field(0, ge=0)  # vulnerability: units removed (the top CLIP-δ of a push-down run)
    layer: Text = "conv5"  # vulnerability: the layer whose units are ranked and removed
    epochs: int = Field(1, ge=1)  # fine-tuning passes after pruning (thesis: 20)
    lr: Float = Field(1e-5, gt=0)  # Adam; x0.1 from half-way (thesis: 1e-5 then 1e-6)
    sparse_epochs: int = Field(1, ge=1)  # group: group-sparse training before the removal

    @model_validator(mode="after")
    def _method(self) -> PruningSpec:
        if self.method == "none" and (self.rate != 0 or self.count):
            raise ConfigProblem("rate", f"method 'none' prunes nothing, so rate must be 0.0, not {self.rate}")
        if self.method in ("norm", "group") and not self.rate > 0:
            raise ConfigProblem("rate", f"method {self.method!r} needs a rate in (0, 1), e.g. 0.5")
        if self.method == "vulnerability" and (self.count < 1 or self.rate):
            raise ConfigProblem(
                "count", "method 'vulnerability' needs count >= 1 (units to remove) and no rate"
            )
        return self


class TrainingSpec(_Section):
    """The shared fine-tuning loop every attack trial runs; a family's own settings sit on its attacks[i]."""

    lr: Float = Field(1e-4, gt=0)  # Adam learning rate
    batch_size: int = Field(64, ge=1)  # training images per step
    epochs: int = Field(2, ge=1)  # passes over the train split
    max_steps: int | None = Field(None, ge=1)  # stop after this many steps (null: epochs x steps per epoch)
    evals_per_epoch: int = Field(10, ge=1)  # evaluation intervals per epoch (α update, checkpoint)
    eval_images: int = Field(2000, ge=1, le=MAX_IMAGES)  # held-out images that measure the accuracy drop
    amp: bool = False  # bf16 autocast


Splits = _list(Text)


class FeatureVizSettings(_Section):
    """The feature-visualisation stage (SCIENCE.md §5): synthetic images of chosen units on θ0 and θ."""

    # a count (the attacked units with the highest CLIP-δ, as picture_units) or the units, e.g. [3, 17]
    units: int | tuple[int, ...] = 4
    steps: int = Field(512, ge=1, le=100_000)  # Adam steps per image (SCIENCE.md §5)
    seed: int = Field(0, ge=0)  # each unit's start and transforms
    batch_units: int = Field(64, ge=1)  # units per optimisation (memory bound; not in the key)

    @field_validator("units")
    @classmethod
    def _units(cls, v: int | tuple[int, ...]) -> int | tuple[int, ...]:
        if isinstance(v, int):
            if not 1 <= v <= MAX_PICTURE_UNITS:
                raise ValueError(
                    f"{v} units: a count from 1 to {MAX_PICTURE_UNITS}, or a list of unit indices"
                )
            return v
        if not v or min(v) < 0 or len(set(v)) != len(v) or len(v) > MAX_PICTURE_UNITS:
            raise ValueError(
                f"{list(v)}: a list of 1 to {MAX_PICTURE_UNITS} distinct unit indices >= 0, or a count"
            )
        return v


class MetricsSettings(_Section):
    """The metrics stage; field names are those of ``jobs.metrics.MetricsSpec``."""

    embedder: Text = (
        REFERENCE_EMBEDDER  # reference (offline encoder) | open_clip:ViT-B-32:openai | reference:<ckpt>
    )
    k: int = Field(10, ge=1, le=MAX_IMAGES)  # size of the top-k sets compared before/after
    tau_images: int = Field(10_000, ge=1, le=MAX_IMAGES)  # |D_τ| for Kendall-τ
    splits: Splits | None = None  # reported splits; null: the dataset's two splits
    # units in the before/after picture: a count (the attacked units with the highest CLIP-δ; 0: no
    # picture) or the units themselves, e.g. [3, 17]
    picture_units: int | tuple[int, ...] = 4
    # synthetic feature visualisation of chosen units before / after each attack; null: off
    featureviz: FeatureVizSettings | None = None

    @field_validator("picture_units")
    @classmethod
    def _picture_units(cls, v: int | tuple[int, ...]) -> int | tuple[int, ...]:
        if isinstance(v, int):
            if v < 0:
                raise ValueError(f"{v} units: a count >= 0 (0: no picture) or a list of unit indices")
            return v
        if not v or min(v) < 0 or len(set(v)) != len(v) or len(v) > MAX_PICTURE_UNITS:
            raise ValueError(
                f"{list(v)}: a list of 1 to {MAX_PICTURE_UNITS} distinct unit indices >= 0, or a count"
            )
        return v

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, v: str) -> str:
        if v != REFERENCE_EMBEDDER:
            try:
                parse_spec(v)
            except (ValueError, KeyError) as e:
                raise ValueError(str(e)) from None
        return v


class ResourcesSpec(_Section):
    """What one trial reserves on the Ray cluster."""

    cpus_per_trial: Float = Field(1.0, gt=0)
    gpus_per_trial: GpuCount = "auto"  # auto: 1 if the cluster has GPUs, else 0


Models = _list(ModelSpec)
Layers = _list(Text)
Attacks = _list(Annotated[AttackConfig, _FamilyUnion()])
Prunings = _list(PruningSpec)
Seeds = _list(Annotated[int, Field(ge=0)])


class SweepSpec(_Section):
    """A whole sweep. Build it with ``load_spec``; it is frozen and hashable, :meth:`to_dict` is JSON-able."""

    model_config = ConfigDict(title="vizsweep sweep spec")

    name: str = Field(  # MLflow experiment
        description="e.g. name: quickstart", json_schema_extra={"pattern": f"^{NAME_PATTERN}$"}
    )
    store: Uri = Field("./vizsweep-store", validate_default=True)  # local path, file:// or s3://bucket/prefix
    tracking_uri: Text | None = None  # MLflow; null: see default_tracking_uri
    dataset: DatasetSpec = Field(description="e.g. dataset: {uri: ./data, synth: {}}")
    models: Models = Field(description="e.g. [{name: alexnet_mini, weights: pretrain}]")
    # the layers whose units the thesis's attacks move; each must exist in every model
    # (a sweep of families that read their own layer, like saliency fooling, may leave it empty)
    layers: Annotated[tuple[Text, ...], AfterValidator(_unique)] = Field(
        (), description="e.g. layers: [conv3, conv5]"
    )
    attacks: Attacks = Field(description="e.g. [{name: push-down}]")
    pruning: Prunings = (PruningSpec(),)  # one variant per entry; every attack runs on each
    seeds: Seeds = (0,)  # one trial per seed
    alpha: AlphaConfig = AlphaConfig()  # the α rule (shared.alpha, SCIENCE.md §2)
    training: TrainingSpec = TrainingSpec()
    metrics: MetricsSettings = MetricsSettings()
    resources: ResourcesSpec = ResourcesSpec()
    max_failures: int = Field(2, ge=0)  # Tune FailureConfig retries per trial
    ray_address: Text | None = None  # null: local Ray, or the cluster in RAY_ADDRESS
    # Python modules that register out-of-tree plugins (a family, its attacks, a data provider);
    # imported before the spec is read, and by every trial worker.
    plugins: tuple[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")], ...
    ] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v) or ".." in v:
            raise ValueError(
                f"{shown(v)} is not a safe sweep name: it must match ^{NAME_PATTERN}$ and hold no '..' "
                "(use only letters, digits, '_', '.' and '-', at most 64, starting with a letter or digit; "
                "e.g. name: quickstart)"
            )
        return v

    @field_validator("tracking_uri")
    @classmethod
    def _tracking(cls, v: str | None) -> str | None:
        problem = None if v is None else tracking_scheme_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _complete(self) -> SweepSpec:
        if self.tracking_uri is None:
            object.__setattr__(self, "tracking_uri", default_tracking_uri(self.store))
        if self.metrics.splits is None:
            splits = (self.dataset.train_split, self.dataset.val_split)
            object.__setattr__(self, "metrics", self.metrics.model_copy(update={"splits": splits}))
        problems = cross_problems(vars(self))
        if problems:
            raise Problems(problems)
        return self

    def scopes(self) -> list[tuple[tuple[str, ...], ...]]:
        """Per attack entry, the layer scope of each of its trials, as its family expands it."""
        return [family_of(a.name).scopes(a, self.layers) for a in self.attacks]

    def trial_count(self) -> int:
        """Attack trials: models x pruning x seeds x (per attack: the trials its family makes of the layers)."""
        per_model = [
            sum(
                len(family_of(a.name).scopes(a, self.layers))
                * starting_models(a, self.attacks, m.name, self.layers)
                for a in self.attacks
                if family_of(a.name).applies(a, m.name)
            )
            for m in self.models
        ]  # an entry may be meant for one model only, or start from the models other trials train
        stored = store_trials(self.attacks, self.layers)  # on models of the store: not per variant
        return (sum(per_model) * len(self.pruning) + stored) * len(self.seeds)

    def trial_formula(self) -> str:
        """How :meth:`trial_count` arises, e.g. '1 model × 1 pruning setting × 1 seed × 2 layers × 3 attacks'."""
        head = [_count(len(self.models), "model"), _count(len(self.pruning), "pruning setting")]
        head.append(_count(len(self.seeds), "seed"))
        scopes = self.scopes()
        groups = [len(s) for s in scopes]
        if any(not family_of(a.name).applies(a, m.name) for a in self.attacks for m in self.models):
            return f"per model, the attacks meant for it × {head[1]} × {head[2]}"
        if any(family_of(a.name).starts_from(a) != (BASE,) for a in self.attacks):
            stored = store_trials(self.attacks, self.layers)
            tail = " (a model of the store: once per seed, not per model or pruning)" if stored else ""
            return f"{head[0]} × {head[1]} × {head[2]} × per attack, its layer scopes × the models it starts from{tail}"
        if len(set(groups)) == 1:
            unit = "layer" if all(len(g) == 1 for g in scopes[0]) else "layer set"
            tail = [_count(groups[0], unit), _count(len(self.attacks), "attack")]
        else:
            tail = [f"({' + '.join(map(str, groups))}) layer scopes of {len(self.attacks)} attacks"]
        return " × ".join(head + tail)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists, not tuples) that ``load_spec`` reads back to an equal spec.

        Sections added after sweep ids were first handed out are left out while off, so a spec that
        does not use them keeps its sweep id (``orchestrator.status.sweep_id_for``) and resumes."""
        out = self.model_dump(mode="json")
        for section, key in LATER_OPTIONAL:
            if out.get(section, {}).get(key, "") is None:
                del out[section][key]
        return out


def spec_model() -> type[SweepSpec]:
    """:class:`SweepSpec`, its attacks union rebuilt if a family registered since it was built."""
    if config_models() != _FamilyUnion.built:
        SweepSpec.model_rebuild(force=True)
    return SweepSpec


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a sweep spec (``vizsweep schema``): editors complete and check specs with it."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **spec_model().model_json_schema()}


MAX_PICTURE_UNITS = 32  # rows of one before/after picture
LATER_OPTIONAL = (("metrics", "featureviz"),)  # (section, key) of settings that default to off (None)


def _picture_unit_problems(models: tuple, layers: tuple, metrics: MetricsSettings) -> list[tuple[str, str]]:
    """Units named for the pictures (and the synthetic images) must exist in every sweep layer of every model."""
    out = _named_unit_problems(models, layers, metrics.picture_units, "metrics.picture_units")
    if metrics.featureviz is not None:
        out += _named_unit_problems(models, layers, metrics.featureviz.units, "metrics.featureviz.units")
    return out


def _named_unit_problems(models: tuple, layers: tuple, units: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(units, tuple):
        return []
    from shared.models.fit import layer_units

    out = []
    for m in (m for m in models if m is not None):
        for layer in (ly for ly in layers if ly is not None):
            try:
                n = layer_units(m.name, layer)
            except (LayerError, KeyError, ValueError):
                continue  # a bad layer or model is reported by its own check
            bad = [u for u in units if n is not None and u >= n]
            if bad:
                msg = f"units {bad} are not in layer {layer} of {m.name} ({n} units: 0..{n - 1})"
                out.append((where, msg))
    return out


def cross_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Checks across sections, on whatever sections parsed (None: a failed section or list item)."""
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
    facts = synth_facts(ds.synth) if isinstance(ds, DatasetSpec) and ds.synth is not None else {}
    out += attack_problems(v, facts) + size_problems(v, facts)
    if isinstance(models, tuple) and isinstance(layers, tuple) and isinstance(metrics, MetricsSettings):
        out += _picture_unit_problems(models, layers, metrics)
    if isinstance(ds, DatasetSpec) and isinstance(metrics, MetricsSettings) and metrics.splits:
        for k, split in enumerate(metrics.splits):
            if split not in (ds.train_split, ds.val_split):
                msg = f"{split!r} is neither dataset.train_split ({ds.train_split!r}) nor dataset.val_split"
                out.append((f"metrics.splits[{k}]", f"{msg} ({ds.val_split!r})"))
    return out


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
        problem = uri_problem(weights)
        if problem:
            return problem
        try:
            store.normalize(weights)
        except store.StoreError as e:
            return str(e)
    return None


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
