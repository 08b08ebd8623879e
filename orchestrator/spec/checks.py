"""What this machine decides about a spec: paths exist, sizes fit, checkpoints load, servers answer.

These run on whatever sections parsed, so a bad section does not hide the others' problems.
Models an attack names in the store (``sweep:``/``key:``) are looked up there (``orchestrator.store_models``).
A checkpoint is opened with ``torch.load(weights_only=True)`` and compared with the model built on
the meta device (``shared.models.fit``); an http(s) tracking server gets one short probe.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from orchestrator.spec.schema import (
    REFERENCE_EMBEDDER,
    DatasetSpec,
    MetricsSettings,
    ResourcesSpec,
)
from orchestrator.spec.sizes import attack_problems, dataset_facts, size_problems
from orchestrator.spec.tracking_uri import tracking_reach_problem
from orchestrator.store_models import StoreRefError, resolve
from shared import store
from shared.attacks import family_of, is_store_ref
from shared.datasets import DatasetError, list_shards
from shared.models.fit import checkpoint_problem


def environment_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Filesystem and machine checks on the parsed sections (None: a failed section or item)."""
    out: list[tuple[str, str]] = []
    ds, models, metrics, res = v.get("dataset"), v.get("models"), v.get("metrics"), v.get("resources")
    if isinstance(ds, DatasetSpec) and ds.synth is None:
        problems = _dataset_problems(ds)
        out += problems
        facts = dataset_facts(ds) if not problems else {}
        if facts:
            out += attack_problems(v, facts) + size_problems(v, facts)
    for i, m in enumerate(models if isinstance(models, tuple) else ()):
        if m is None or m.weights_kind != "checkpoint":
            continue
        why = _missing(m.weights)
        if why:
            msg = f"{why}; give an existing checkpoint, 'pretrain' or torchvision weights"
            out.append((f"models[{i}].weights", msg))
        elif (why := checkpoint_problem(m.name, m.weights)) is not None:
            out.append((f"models[{i}].weights", why))
    out += _store_model_problems(v)
    tracking = v.get("tracking_uri")
    if isinstance(tracking, str) and (why := tracking_reach_problem(tracking)) is not None:
        out.append(("tracking_uri", why))
    if isinstance(metrics, MetricsSettings) and metrics.embedder.startswith(f"{REFERENCE_EMBEDDER}:"):
        why = _missing(metrics.embedder.partition(":")[2])
        if why:
            msg = "; give an existing checkpoint, or plain 'reference' to let the launcher train one"
            out.append(("metrics.embedder", f"reference encoder {why}{msg}"))
    if isinstance(res, ResourcesSpec) and v.get("ray_address") is None and not os.environ.get("RAY_ADDRESS"):
        out += _resource_problems(res)
    return out


def _store_model_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each model an attack entry names in the store exists there, committed (a trial of a sweep, a key)."""
    out: list[tuple[str, str]] = []
    store_uri, attacks = v.get("store"), v.get("attacks")
    if not isinstance(store_uri, str):
        return out
    for i, a in enumerate(attacks if isinstance(attacks, tuple) else ()):
        if a is None:
            continue
        fam = family_of(a.name)
        field = f"attacks[{i}].{fam.starts_from_field or 'starts_from'}"
        seen: dict[str, int] = {}  # content key -> the first index naming it
        for j, src in enumerate(fam.starts_from(a)):
            if not is_store_ref(src):
                continue
            try:
                found = resolve(src, store_uri)
            except StoreRefError as e:
                out.append((f"{field}[{j}]", str(e)))
                continue
            except (OSError, store.StoreError, ValueError) as e:
                out.append((f"{field}[{j}]", f"cannot read the store: {e}"))
                continue
            key = found.key
            for f, msg in fam.model_problems(a, found.model):  # e.g. its layer: the model may be another
                out.append((f"attacks[{i}].{f}", f"{msg} ({field}[{j}] {src}: {found.model})"))
            if key in seen:
                msg = f"{src!r} is the model {field}[{seen[key]}] names (content key {key}); list it once"
                out.append((f"{field}[{j}]", msg))
            seen.setdefault(key, j)
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
    import torch

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
