"""Checks a family's ``spec_problems`` shares: attacked units inside the layer, classes that have images.

``parts`` is what the spec reader hands ``AttackFamily.spec_problems``: ``models`` and ``layers``
(None where a section failed), ``dataset``, and the dataset's facts when known: ``classes``
(count), ``sizes`` (split -> images) and ``per_class`` (split -> {label: images}).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def unit_problems(units: Iterable[int] | None, parts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """('units', message) for unit indices past a layer's unit count (model built on the meta device)."""
    if not units:
        return []
    from shared.models.fit import layer_units
    from shared.models.zoo import LayerError

    out: list[tuple[str, str]] = []
    for i, m in enumerate(parts.get("models") or ()):
        for layer in parts.get("layers") or ():
            if m is None or layer is None:
                continue
            try:
                n = layer_units(m.name, layer, parts.get("classes"))
            except (LayerError, KeyError):
                continue  # the layer's own problem is reported at layers[j]
            bad = [u for u in units if n is not None and u >= n]
            if bad:
                msg = f"{bad}: layer {layer!r} of {m.name!r} (models[{i}]) has {n} units, indices 0..{n - 1}"
                out.append(("units", msg))
    return out


def empty_class_problems(parts: Mapping[str, Any], labels: Iterable[int]) -> list[str]:
    """Messages for labels with no image in the train split (when the per-class counts are known)."""
    ds = parts.get("dataset")
    train = getattr(ds, "train_split", "train")
    counts = (parts.get("per_class") or {}).get(train)
    if not counts:
        return []
    return [
        f"class {c} has no images in the train split {train!r}; pick a class with images"
        for c in labels
        if counts.get(c, 0) == 0
    ]
