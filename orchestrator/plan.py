"""Planning: a validated sweep spec -> one :class:`TrialPlan` per trial, with content keys. Pure.

Nothing here trains, reads data or starts Ray: the phases (``orchestrator.phases``) do the
work and hand their results (:class:`Prepared`) in; models the spec names in the store are
looked up by their manifests (``orchestrator.store_models``). Every plan carries the keys of its
stages, so the launcher can tell what the store already holds. Families are iterated as
their records declare (``shared.attacks``): this module names no attack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.runners import TrialJob, TrialOutcome, runner_for
from orchestrator.store_models import StoreModel, resolve_all
from shared.attacks import BASE, AttackConfig, attack_order, family_of, is_store_ref, store_sources


@dataclass(frozen=True)
class Variant:
    """A model the attacks start from: a base model, or a pruned+fine-tuned one."""

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
    """What the preparing phases produced: the dataset, every variant and the embedder."""

    dataset: str
    dataset_id: str
    variants: tuple[Variant, ...]
    embedder: str


@dataclass(frozen=True)
class TrialPlan:
    """One Tune trial: a job of some family with everything a worker needs, JSON-able."""

    trial_key: str
    run_name: str
    job: dict[str, Any]  # TrialJob.to_dict()
    attack_key: str
    params: dict[str, Any]  # MLflow params
    alpha: dict[str, Any]
    alpha_controlled: bool  # False for the control rows (α fixed)
    family: str = ""
    variant: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()  # modules a worker imports first (the spec's out-of-tree plugins)
    after: tuple[str, ...] = ()  # trial keys whose trained models this trial starts from (run first)
    tags: dict[str, Any] = field(default_factory=dict)  # MLflow tags: provenance (paths, keys), not settings

    def run_tags(self, sweep_id: str) -> dict[str, Any]:
        """The run's tags: the sweep, the content keys and where the weights and data came from."""
        keys = {"vizsweep.sweep_id": sweep_id, "vizsweep.attack_key": self.attack_key,
                "vizsweep.variant_key": self.variant.get("key", "")}  # fmt: skip
        return {**keys, **self.tags}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialPlan:
        """Read back a plan; its plugin modules are imported first, so its family is registered."""
        import importlib

        for module in d.get("plugins", ()):
            importlib.import_module(module)
        return cls(**{**d, "plugins": tuple(d.get("plugins", ())), "after": tuple(d.get("after", ()))})

    def trial_job(self) -> TrialJob:
        return TrialJob.from_dict(self.job)


def trial_job(
    spec: Any, prep: Prepared, v: Variant, entry: AttackConfig, layers: tuple[str, ...], seed: int
) -> TrialJob:
    """The job of one trial: the family's own settings plus the sweep's common ones."""
    fam = family_of(entry.name)
    t = spec.training
    return TrialJob(
        attack=entry.name, config=fam.job_config(entry), dataset=prep.dataset, model=v.model,
        weights=v.weights, variant_key=v.key, layers=tuple(layers), units=fam.units(entry), seed=seed,
        train_split=spec.dataset.train_split, val_split=spec.dataset.val_split,
        training=_plain(t), alpha=_plain(spec.alpha),
        evaluation={**_plain(spec.metrics), "embedder": prep.embedder},
    )  # fmt: skip


def needs_tables(spec: Any) -> bool:
    """A family of the sweep starts from θ0's unit tables (saliency fooling reads none)."""
    return bool(spec.layers) and any(family_of(a.name).needs_tables for a in spec.attacks)


def plan_trials(spec: Any, prep: Prepared) -> list[TrialPlan]:
    """Every trial of the sweep, in a stable order (model, prune, attack as declared, layers, seed).

    Per variant, the trials that start from it come first; then the trials that start from the
    models other trials train (``AttackFamily.starts_from``), one per such trial, with its seed.
    Last, the trials on models already in the store (``sweep:``/``key:`` references), once per
    sweep, not per variant: their weights are known now, so they run in the first round.
    """
    plans = []
    entries = sorted(spec.attacks, key=lambda a: attack_order(a.name))
    for v in prep.variants:
        mine = [e for e in entries if family_of(e.name).applies(e, v.model)]
        first = []
        for entry in (e for e in mine if BASE in family_of(e.name).starts_from(e)):
            for layers in family_of(entry.name).scopes(entry, spec.layers):
                for seed in spec.seeds:
                    first.append(plan_trial(spec, prep, v, entry, layers, seed))
        later = []
        for entry in mine:
            sources = [
                s for s in family_of(entry.name).starts_from(entry) if s != BASE and not is_store_ref(s)
            ]
            for dep in (p for s in sources for p in first if p.params["attack"] == s):
                if not family_of(dep.params["attack"]).trains_model:
                    continue
                for layers in family_of(entry.name).scopes(entry, spec.layers):
                    later.append(plan_trial(spec, prep, v, entry, layers, dep.params["seed"], after=dep))
        plans += first + later
    found = resolve_all(entries, spec.store)
    for entry in entries:
        refs = {found[r].key: r for r in reversed(store_sources(entry))}  # one model named twice: once
        for ref in (r for r in store_sources(entry) if refs[found[r].key] == r):
            v = Variant(**found[ref].variant)
            for layers in family_of(entry.name).scopes(entry, spec.layers):
                for seed in spec.seeds:
                    plans.append(plan_trial(spec, prep, v, entry, layers, seed, victim=found[ref]))
    return plans


def plan_trial(
    spec: Any, prep: Prepared, v: Variant, entry: AttackConfig, layers: tuple[str, ...], seed: int,
    after: TrialPlan | None = None, victim: StoreModel | None = None,
) -> TrialPlan:  # fmt: skip
    """One trial; ``after``: the trial whose trained model it starts from (its weights come later);
    ``victim``: the model of the store it starts from (``v`` is the variant that model came from)."""
    fam = family_of(entry.name)
    job = trial_job(spec, prep, v, entry, layers, seed)
    if after is not None:
        job = dataclasses.replace(job, weights="", start_key=after.attack_key)
    elif victim is not None:
        job = dataclasses.replace(job, model=victim.model, weights=victim.weights, start_key=victim.key)
    runner = runner_for(entry.name)
    akey = runner.attack_key(job, prep.dataset_id)
    trial_key = runner.trial_key(job, prep.dataset_id)
    layer = "+".join(layers)
    prune = "" if v.prune_method == "none" else f"{v.prune_rate:g}"
    on = "" if after is None else f"-on-{after.params['attack']}-{after.params['layer']}"
    if victim is not None:
        on = "-on-" + victim.ref.replace(":", "-").replace("/", "-")
    run_name = f"{v.model}-{v.prune_method}{prune}-{layer}-{fam.describe(entry)}{on}-s{seed}"
    params = {
        "family": fam.name, "model": v.model, "prune_method": v.prune_method, "prune_rate": v.prune_rate,
        "layer": layer, "attack": entry.name, "scope": _scope_label(entry), "seed": seed,
        **_plain(spec.training), **job.config, "alpha": _plain(spec.alpha),
        "weight_pruning_rate": v.weight_pruning_rate,
        "filter_pruning_rate": v.filter_pruning_rate, "fine_tuned_acc": v.fine_tuned_acc,
        "prune_priority": v.prune_priority,
    }  # fmt: skip
    # where the weights, data and embedder came from: tags (paths and hashes are not settings to compare)
    tags = {
        "vizsweep.dataset": prep.dataset,
        "vizsweep.weights": v.weights,
        "vizsweep.embedder": prep.embedder,
    }
    if after is not None:  # the model attacked: another trial's
        params |= {"start": after.params["attack"], "start_label": f"{after.params['attack']} {after.params['layer']}",
                   "start_run": after.run_name}  # fmt: skip
        tags |= {"vizsweep.weights": after.run_name, "vizsweep.start_trial_key": after.trial_key}
    elif victim is not None:  # a model of the store: the reference as the spec wrote it
        params |= {"start": victim.ref, "start_label": victim.ref, "start_run": victim.run}
        tags |= {"vizsweep.weights": victim.weights, "vizsweep.start_key": victim.key}
    elif fam.starts_from(entry) != (BASE,):
        params["start"] = BASE
    return TrialPlan(
        trial_key=trial_key, run_name=run_name, job=job.to_dict(), attack_key=akey, params=params,
        alpha=_plain(spec.alpha), alpha_controlled=fam.alpha_controlled(entry), family=fam.name,
        variant=asdict(v), plugins=tuple(getattr(spec, "plugins", ())),
        after=() if after is None else (after.trial_key,), tags=tags,
    )  # fmt: skip


def with_start_models(
    plans: list[TrialPlan], every: list[TrialPlan], store_uri: str
) -> tuple[list[TrialPlan], list[str]]:
    """Dependent plans with the trained models they start from filled in, and the run names (with the
    reason) of those whose model's trial did not finish: they cannot run in this launch."""
    by_key = {p.trial_key: p for p in every}
    ready, blocked = [], []
    for p in plans:
        weights = ""
        for key in p.after:
            dep = by_key.get(key)
            outcome = stored_result(dep, store_uri) if dep is not None else None
            if outcome is None or not outcome.model_uri:
                name = dep.run_name if dep is not None else key
                blocked.append(f"{p.run_name} (the trial it starts from, {name}, did not finish)")
                break
            weights = outcome.model_uri
        else:
            ready.append(dataclasses.replace(p, job={**p.job, "weights": weights}))
    return ready, blocked


def stored_result(plan: TrialPlan, store_uri: str) -> TrialOutcome | None:
    """The trial's committed outcome, or None when anything is unfinished (reads manifests only)."""
    return runner_for(plan.job["attack"]).stored(plan.trial_job(), store_uri)


def _scope_label(entry: AttackConfig) -> str:
    units = getattr(entry, "units", None)
    return f"units {','.join(map(str, units))}" if units else str(getattr(entry, "scope", "layer"))


def _plain(x: Any) -> Any:
    """Dataclasses and pydantic models as JSON-able dicts (tuples as lists)."""
    if hasattr(x, "model_dump"):
        x = x.model_dump(mode="json")
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x
