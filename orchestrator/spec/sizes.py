"""The dataset's facts (classes, split sizes, images per class) and the settings that must fit them.

Known before any data exists for a ``synth:`` dataset (:func:`synth_facts`), from the manifest
(or Parquet footers) otherwise (:func:`dataset_facts`, ``vizsweep validate`` without --spec-only).
Each attack family checks its own entries against them (``AttackFamily.spec_problems``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared import store
from shared.attacks import family_of
from shared.dataset_meta import split_size


def synth_facts(synth: Any) -> dict[str, Any]:
    """The sizes a synthetic dataset will have, known before it is written (``shared.synth.generate``)."""
    per = {"train": synth.train_per_class, "val": synth.val_per_class}
    return {
        "classes": synth.classes,
        "sizes": {s: n * synth.classes for s, n in per.items()},
        "per_class": {s: dict.fromkeys(range(synth.classes), n) for s, n in per.items()},
    }


def size_problems(v: Mapping[str, Any], facts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Settings that need more images than a split has (``facts``: see :func:`synth_facts`)."""
    ds, metrics, sizes = v.get("dataset"), v.get("metrics"), facts.get("sizes") or {}
    out = []
    if ds is not None and metrics is not None:
        for split in metrics.splits or (ds.train_split, ds.val_split):
            n = sizes.get(split)
            if n is not None and metrics.k > n:
                msg = f"{metrics.k}: split {split!r} has {n:,} images, fewer than k (top-k sets are drawn from it)"
                out.append(("metrics.k", f"{msg}; use k <= {n:,}"))
                break
    return out


def attack_problems(v: Mapping[str, Any], facts: Mapping[str, Any] | int | None) -> list[tuple[str, str]]:
    """Each attack entry against the rest of the spec, as its family checks it (``spec_problems``).

    ``facts``: the dataset's ``classes``, ``sizes`` and ``per_class`` when known (an int: the class count).
    """
    facts = {"classes": facts} if not isinstance(facts, Mapping) else facts
    parts = {k: v.get(k) if isinstance(v.get(k), tuple) else None for k in ("models", "layers")}
    parts |= {"dataset": v.get("dataset"), "classes": facts.get("classes")}
    parts |= {"sizes": facts.get("sizes"), "per_class": facts.get("per_class")}
    out = []
    attacks = v.get("attacks")
    parts["attacks"] = attacks if isinstance(attacks, tuple) else None  # entries may name each other
    for i, a in enumerate(attacks if isinstance(attacks, tuple) else ()):
        if a is not None:
            out += [(f"attacks[{i}].{f}", m) for f, m in family_of(a.name).spec_problems(a, parts)]
    return out


def dataset_facts(ds: Any) -> dict[str, Any]:
    """Class count, split sizes and per-class counts from the dataset's manifest (or Parquet footers)."""
    try:
        m = store.read_manifest(ds.uri) or {}
    except (OSError, store.StoreError, ValueError):
        return {}
    names = m.get("classes")
    classes = len(names) if isinstance(names, list) else names if isinstance(names, int) else None
    if classes is None and isinstance(m.get("num_classes"), int):
        classes = m["num_classes"]
    sizes: dict[str, int] = {}
    per_class: dict[str, dict[int, int]] = {}
    for split in (ds.train_split, ds.val_split):
        try:
            n = split_size(ds.uri, split)
        except (OSError, store.StoreError, ValueError):
            n = None
        if n is not None:
            sizes[split] = n
        record = (m.get("splits") or {}).get(split)
        per = record.get("per_class") if isinstance(record, dict) else None
        if isinstance(per, int) and classes is not None:
            per_class[split] = dict.fromkeys(range(classes), per)
        elif isinstance(per, dict):
            per_class[split] = {int(k): int(n) for k, n in per.items() if str(k).isdigit()}
    return {"classes": classes, "sizes": sizes, "per_class": per_class}
