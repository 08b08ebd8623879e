"""Models already in the store, named by reference in a spec (``AttackFamily.starts_from``).

``sweep:<sweep id>/<run name>``: the model a trial of another sweep of the same store trained,
found through that sweep's ``plan.json`` and the trial's committed outcome; ``key:<content key>``:
any model under ``{store}/models/<key>/`` with a committed manifest (a base model, a pruned variant
or an attacked model). Both resolve when planning, as the model exists already: trials on them run
in the first round. Reads manifests and plans only; a failed lookup says what was looked up and
what would be valid (:class:`StoreRefError`, a spec error at validation).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jobs.attack import model_dir
from jobs.runners import TrialJob, runner_for
from orchestrator.status import sweep_dir
from shared import store
from shared.attacks import KEY_REF, REF_FORMS, SWEEP_REF, AttackConfig, family_of, store_sources

SHOWN = 12  # names listed in a failed lookup's message, at most


class StoreRefError(ValueError):
    """A reference that names no model of the store (the message says what would be valid)."""


@dataclass(frozen=True)
class StoreModel:
    """A model of the store a trial starts from: what its job needs and what labels its run."""

    ref: str  # as the spec wrote it
    model: str  # registered model name
    weights: str  # the model.pt URI
    key: str  # its content key (the folder under {store}/models/; an input attack's model_key)
    variant: dict[str, Any] = field(default_factory=dict)  # the Variant it came from (orchestrator.plan)
    run: str = ""  # sweep references: the run name of the trial that trained it


def resolve(ref: str, store_uri: str) -> StoreModel:
    """The model ``ref`` names; :class:`StoreRefError` when the store holds none."""
    if ref.startswith(SWEEP_REF):
        return _by_sweep(ref, store_uri)
    if ref.startswith(KEY_REF):
        return _by_key(ref, store_uri)
    raise StoreRefError(f"{ref!r} is not a store model reference; write {REF_FORMS}")


def resolve_all(attacks: Iterable[AttackConfig], store_uri: str) -> dict[str, StoreModel]:
    """Every store model the entries start from, by reference (raises on the first that is missing)."""
    refs = dict.fromkeys(r for a in attacks for r in store_sources(a))
    return {r: resolve(r, store_uri) for r in refs}


def _listing(names: list[str]) -> str:
    more = f" (and {len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more if names else "none"


def _by_sweep(ref: str, store_uri: str) -> StoreModel:
    sid, _, run = ref.removeprefix(SWEEP_REF).partition("/")
    plan_uri = store.join(sweep_dir(store_uri, sid), "plan.json")
    if not store.exists(plan_uri):
        sweeps = [u.rsplit("/", 1)[-1] for u in store.list_subdirs(store.join(store_uri, "sweeps"))]
        raise StoreRefError(
            f"{ref!r}: no sweep {sid!r} in the store {store.normalize(store_uri)} (looked for {plan_uri}); "
            f"sweeps there: {_listing(sweeps)}"
        )
    plans = store.read_json(plan_uri)
    plan = next((p for p in plans if p.get("run_name") == run), None)
    if plan is None:
        names = [p.get("run_name", "?") for p in plans]
        raise StoreRefError(
            f"{ref!r}: sweep {sid} has no run {run!r}; its runs: {_listing(names)} (`vizsweep status {sid}`)"
        )
    for module in plan.get("plugins", ()):
        importlib.import_module(module)  # its family is registered
    job = TrialJob.from_dict(plan["job"])
    if not family_of(job.attack).trains_model:
        trained = [p["run_name"] for p in plans if family_of(p["job"]["attack"]).trains_model]
        raise StoreRefError(
            f"{ref!r}: trial {run} of sweep {sid} ({job.attack}) trains no model; its runs that do: "
            f"{_listing(trained)}"
        )
    outcome = runner_for(job.attack).stored(job, store_uri)
    if outcome is None:
        raise StoreRefError(
            f"{ref!r}: trial {run} of sweep {sid} has no stored model: it has not finished "
            f"(`vizsweep status {sid}`; `vizsweep resume {sid}` finishes it)"
        )
    if not outcome.model_uri:
        raise StoreRefError(f"{ref!r}: trial {run} of sweep {sid} finished without a model (stopped early)")
    variant = plan.get("variant") or {"model": job.model, "weights": job.weights, "key": job.variant_key,
                                       "base": job.variant_key}  # fmt: skip
    return StoreModel(ref, job.model, outcome.model_uri, outcome.attack_key, dict(variant), run)


def _by_key(ref: str, store_uri: str) -> StoreModel:
    key = ref.removeprefix(KEY_REF)
    mdir = model_dir(store_uri, key)
    m = store.read_manifest(mdir)
    if m is None or m.get("key") != key or "model" not in m:
        why = "no folder" if not store.exists(mdir) else "no committed _MANIFEST.json (unfinished or damaged)"
        raise StoreRefError(
            f"{ref!r}: no committed model with content key {key!r}: {mdir} has {why}; a key is the name "
            f"of a folder of {store.join(store_uri, 'models')} (`vizsweep status <sweep>` lists trials; "
            f"or name a trial as {SWEEP_REF}<sweep id>/<run name>)"
        )
    weights = store.join(mdir, "model.pt")
    return StoreModel(ref, str(m["model"]), weights, key, _variant_of(m, weights, store_uri))


def _variant_of(m: dict[str, Any], weights: str, store_uri: str) -> dict[str, Any]:
    """The variant a keyed model is or came from (pruning method and rate, for the report's labels)."""
    inputs = m.get("inputs") or {}
    if inputs.get("variant_key"):  # an attacked model: its variant's record, when that is in the store
        vkey = str(inputs["variant_key"])
        vm = store.read_manifest(model_dir(store_uri, vkey)) or {}
        base = {"model": m["model"], "weights": str(inputs.get("weights", "")), "key": vkey}
        return {**base, "base": str(vm.get("base_key") or vkey), **_pruning(vm)}
    return {"model": m["model"], "weights": weights, "key": m["key"], "base": str(m.get("base_key") or m["key"]),
            **_pruning(m)}  # fmt: skip


def _pruning(m: dict[str, Any]) -> dict[str, Any]:
    if m.get("method") in (None, "none"):
        return {}
    return {"prune_method": str(m["method"]), "prune_rate": float(m.get("rate") or 0.0)}
