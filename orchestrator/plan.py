"""Planning: a validated sweep spec -> the stage graph with content keys (ARCHITECTURE.md).

``prepare`` runs the cheap driver-side stages (dataset, base models, reference
encoder) and ``plan_trials`` expands the spec into one :class:`TrialPlan` per
pruned-then-attacked model × layer scope × attack × seed. Every plan carries the
keys of its stages, so the launcher can tell what the store already holds:
a trial whose attacked model and metrics are committed trains nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from shared import store

ATTACK_ORDER = {"finetune": 0, "push-down": 1, "push-up": 2, "push-up-max": 3}


@dataclass(frozen=True)
class Variant:
    """A model the attacks start from: a base model, or (pruning issue) a pruned+fine-tuned one."""

    model: str
    weights: str  # checkpoint URI or torchvision weights name
    key: str  # content key: the tables of θ0 live under model={key}
    base: str  # the base model's key (== key when not pruned)
    prune_method: str = "none"
    prune_rate: float = 0.0  # the requested rate (vulnerability: the number of units removed)
    weight_pruning_rate: float | None = None  # measured, recorded with the variant
    filter_pruning_rate: float | None = None
    fine_tuned_acc: float | None = None  # val top-1 after pruning + fine-tuning, in [0, 1]
    prune_priority: str = ""  # group pruning: "filter" or "weight"


@dataclass(frozen=True)
class Prepared:
    """What the driver-side stages produced."""

    dataset: str
    dataset_id: str
    variants: tuple[Variant, ...]
    embedder: str


@dataclass(frozen=True)
class TrialPlan:
    """One Tune trial: an attack and its metrics, with everything a worker needs, JSON-able."""

    trial_key: str
    run_name: str
    attack: dict[str, Any]  # AttackSpec fields (alpha as a dict)
    metrics: dict[str, Any]  # MetricsSpec fields
    attack_key: str
    params: dict[str, Any]  # MLflow params
    alpha: dict[str, Any]
    alpha_controlled: bool  # False for the fine-tuning baseline (α fixed at 0)
    variant: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialPlan:
        return cls(**d)

    def attack_spec(self, **execution: Any):
        from jobs.attack import AttackSpec
        from shared.alpha import AlphaConfig

        d = dict(self.attack)
        d["alpha"] = AlphaConfig(**d["alpha"])
        d["layers"] = tuple(d["layers"])
        if d["units"] != "all":
            d["units"] = tuple(d["units"])
        return AttackSpec(**{**d, **execution})

    def metrics_spec(self, **execution: Any):
        from jobs.metrics import MetricsSpec

        d = dict(self.metrics)
        d["layers"] = tuple(d["layers"])
        d["splits"] = tuple(d["splits"])
        if d["units"] != "all":
            d["units"] = tuple(d["units"])
        return MetricsSpec(**{**d, **execution})


def _model_key(model: str, weights: str) -> str:
    """A base model given by the user: its name, weights and (for files) size identify it."""
    size = None
    if ("://" in weights or "/" in weights) and store.exists(weights):
        fs, path = store.resolve(weights)
        size = fs.get_file_info(path).size
    return store.content_key(
        {"model": model, "weights": store.normalize(weights) if size else weights, "size": size}
    )


def prepare(spec: Any, progress_for=None) -> Prepared:
    """Driver-side stages: synthetic data if asked for and missing, pretrained bases, the reference encoder."""
    from jobs.reference_encoder import train_reference_encoder
    from shared.dataset_meta import dataset_id
    from shared.synth import generate

    bar = progress_for or (lambda name: None)
    ds = spec.dataset
    if ds.synth is not None and not store.exists(store.join(ds.uri, "_MANIFEST.json")):
        generate(ds.uri, **dataclasses.asdict(ds.synth), progress=bar("synthetic data") or _noop)
    todo: list[tuple[Variant, Any]] = []
    for m in spec.models:
        base = _base_of(spec, m, bar)
        todo.extend((base, p) for p in spec.pruning)
    embedder = spec.metrics.embedder
    if embedder == "reference":
        uri = train_reference_encoder(ds.uri, spec.store, progress=bar("reference encoder") or _noop)
        embedder = f"reference:{uri}"
    prep = Prepared(ds.uri, dataset_id(ds.uri), (), embedder)
    pruned = [(base, p) for base, p in todo if p.method != "none"]
    results = iter(_prune_all(spec, prep, pruned, bar))
    variants = tuple(base if p.method == "none" else _variant(base, p, next(results)) for base, p in todo)
    return dataclasses.replace(prep, variants=variants)


def _base_of(spec: Any, m: Any, bar) -> Variant:
    """The unpruned variant of model entry ``m``: the project's pretraining (reused when stored) or
    the weights the spec names."""
    from jobs.pretrain import PretrainSpec, run_pretrain

    ds = spec.dataset
    if m.weights == "pretrain":
        res = run_pretrain(
            PretrainSpec(dataset=ds.uri, model=m.name, train_split=ds.train_split, val_split=ds.val_split),
            spec.store,
            progress=bar(f"pretrain {m.name}") or _noop,
        )
        return Variant(m.name, res.model_uri, res.key, res.key)
    key = _model_key(m.name, m.weights)
    return Variant(m.name, m.weights, key, key)


def _prune_all(spec: Any, prep: Prepared, pruned: list[tuple[Variant, Any]], bar) -> list[Any]:
    """Phase 1 (SCIENCE.md §4): prune + fine-tune each (base, setting) once, as parallel Ray tasks
    (:mod:`orchestrator.prune_phase`); stored variants are reused by every attack on them."""
    if not pruned:
        return []
    from jobs.raysetup import ensure_ray
    from orchestrator.prune_phase import run_prunes

    ensure_ray(spec.ray_address)
    jobs = [prune_spec(spec, prep, base, p, bar) for base, p in pruned]
    return run_prunes(spec, jobs, bar("pruned variants"))


def prune_spec(spec: Any, prep: Prepared, base: Variant, p: Any, bar=None):
    """The pruning job of setting ``p`` on ``base``. Vulnerability pruning first needs the units'
    CLIP-δ from a push-down run of the base model on ``p.layer``: that run is planned and run here,
    on the driver (reused when stored)."""
    from jobs.prune import PruneSpec

    units: tuple[int, ...] = ()
    rate = p.rate
    if p.method == "vulnerability":
        progress = (bar or (lambda name: None))(f"ranking {base.model} {p.layer} units (push-down)")
        units, rate = vulnerable_units(spec, prep, base, p, progress)
    return PruneSpec(
        dataset=prep.dataset, model=base.model, weights=base.weights, base_key=base.key, method=p.method,
        rate=rate, priority=p.priority, units=units, layer=p.layer, epochs=p.epochs, lr=p.lr,
        sparse_epochs=p.sparse_epochs, train_split=spec.dataset.train_split, val_split=spec.dataset.val_split,
    )  # fmt: skip


def _variant(base: Variant, p: Any, res: Any) -> Variant:
    label = p.rate if p.method != "vulnerability" else float(p.count)
    return Variant(base.model, res.model_uri, res.key, base.key, p.method, label, res.weight_rate,
                   res.filter_rate, res.acc, p.priority if p.method == "group" else "")  # fmt: skip


def vulnerable_units(
    spec: Any, prep: Prepared, base: Variant, p: Any, progress=None
) -> tuple[tuple[int, ...], float]:
    """The ``p.count`` units of ``p.layer`` with the highest CLIP-δ under push-down, and their share."""
    from jobs.attack import run_attack
    from jobs.metrics import read_unit_metrics, run_metrics
    from orchestrator.sweep import initial_tables_for
    from shared.pruning import rank_by_clip_delta

    initial_tables_for(spec, prep.dataset, base, (p.layer,))
    attack = next((a for a in spec.attacks if a.name == "push-down"), _PushDown())
    plan = _plan(spec, prep, base, attack, (p.layer,), spec.seeds[0], spec.training, _alpha_dict(spec))
    report = None
    if progress is not None:
        report = lambda m: progress(int(m["step"]), None, acc_drop=float(m.get("acc_drop", 0.0)))  # noqa: E731
    run_attack(plan.attack_spec(), spec.store, report=report)
    mres = run_metrics(plan.metrics_spec(), spec.store)
    table = read_unit_metrics(mres.per[(p.layer, spec.dataset.train_split)].uri)
    units = rank_by_clip_delta(table, p.count)
    return tuple(int(u) for u in units), p.count / table.num_rows


@dataclass(frozen=True)
class _PushDown:
    name: str = "push-down"
    scope: str = "layer"
    units: Any = None


def _alpha_dict(spec: Any) -> dict[str, Any]:
    return dataclasses.asdict(spec.alpha) if dataclasses.is_dataclass(spec.alpha) else dict(spec.alpha)


def _noop(*a: Any, **k: Any) -> None:
    return None


def plan_trials(spec: Any, prep: Prepared) -> list[TrialPlan]:
    """Every trial of the sweep, in a stable order (model, prune, layer, attack, seed)."""
    plans = []
    t = spec.training
    alpha = dataclasses.asdict(spec.alpha) if dataclasses.is_dataclass(spec.alpha) else dict(spec.alpha)
    for v in prep.variants:
        for a in sorted(spec.attacks, key=lambda a: ATTACK_ORDER.get(a.name, 9)):
            scopes = [tuple(spec.layers)] if a.scope == "layers" else [(layer,) for layer in spec.layers]
            for layers in scopes:
                for seed in spec.seeds:
                    plans.append(_plan(spec, prep, v, a, layers, seed, t, alpha))
    return plans


def _plan(spec, prep: Prepared, v: Variant, a, layers: tuple[str, ...], seed: int, t, alpha) -> TrialPlan:
    from jobs.attack import AttackSpec
    from jobs.metrics import MetricsSpec
    from shared.alpha import AlphaConfig

    units: Any = "all" if a.scope != "unit" else tuple(a.units)
    aspec = AttackSpec(
        dataset=prep.dataset, model=v.model, weights=v.weights, variant_key=v.key, attack=a.name,
        layers=layers, units=units, scale=t.scale, k=t.k, decoy_class=t.decoy_class,
        decoy_images=t.decoy_images, alpha=AlphaConfig(**alpha), lr=t.lr, batch_size=t.batch_size,
        epochs=t.epochs, max_steps=t.max_steps, evals_per_epoch=t.evals_per_epoch,
        eval_split=spec.dataset.val_split, eval_images=t.eval_images, train_split=spec.dataset.train_split,
        seed=seed, amp=t.amp,
    )  # fmt: skip
    akey = aspec.key(prep.dataset_id)
    from jobs.attack import model_dir

    m = spec.metrics
    mspec = MetricsSpec(
        dataset=prep.dataset, model=v.model, variant_key=v.key, init_weights=v.weights,
        final_weights=store.join(model_dir(spec.store, akey), "model.pt"), final_state_key=akey,
        layers=layers, units=units, k=m.k, tau_images=m.tau_images, tau_seed=seed,
        val_split=spec.dataset.val_split, splits=tuple(m.splits), embedder=prep.embedder,
        picture_units=m.picture_units,
    )  # fmt: skip
    attack_d = {f.name: getattr(aspec, f.name) for f in dataclasses.fields(aspec) if f.compare}
    attack_d["alpha"] = asdict(aspec.alpha)
    metrics_d = {f.name: getattr(mspec, f.name) for f in dataclasses.fields(mspec) if f.compare}
    scope = a.scope if a.scope != "unit" else f"units {','.join(map(str, units))}"
    layer = "+".join(layers)
    trial_key = store.content_key(akey, metrics_d)
    run_name = f"{v.model}-{v.prune_method}{'' if v.prune_method == 'none' else v.prune_rate}-{layer}-{a.name}-s{seed}"
    params = {
        "model": v.model, "prune_method": v.prune_method, "prune_rate": v.prune_rate, "layer": layer,
        "attack": a.name, "scope": scope, "seed": seed, "dataset": prep.dataset, "weights": v.weights,
        "lr": t.lr, "epochs": t.epochs, "batch_size": t.batch_size, "max_steps": t.max_steps,
        "scale": t.scale, "k": t.k, "alpha": alpha, "embedder": prep.embedder,
        "variant_key": v.key, "attack_key": akey, "trial_key": trial_key,
        "weight_pruning_rate": v.weight_pruning_rate, "filter_pruning_rate": v.filter_pruning_rate,
        "fine_tuned_acc": v.fine_tuned_acc, "prune_priority": v.prune_priority,
    }  # fmt: skip
    return TrialPlan(
        trial_key=trial_key, run_name=run_name, attack=_jsonable(attack_d), metrics=_jsonable(metrics_d),
        attack_key=akey, params=params, alpha=alpha, alpha_controlled=a.name != "finetune",
        variant=asdict(v),
    )  # fmt: skip


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def stored_result(plan: TrialPlan, store_uri: str) -> dict[str, Any] | None:
    """The trial's committed outputs (attack manifest + metrics), or None when anything is unfinished."""
    from jobs.attack import model_dir
    from jobs.metrics import committed_metrics

    am = store.read_manifest(model_dir(store_uri, plan.attack_key))
    if am is None or am.get("key") != plan.attack_key:
        return None
    mr = committed_metrics(plan.metrics_spec(), store_uri)
    if mr is None:
        return None
    return {"attack": am, "metrics": mr}
