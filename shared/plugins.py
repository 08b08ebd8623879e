"""Every plugin kind in one table: kind -> (its registry, how an entry describes itself in one line).

``vizsweep list KIND`` prints from here (like ``timm.list_models``), so a new kind is one row
and a new plugin needs nothing beyond its registration. Registries are imported when a kind is
listed, not when this module is: listing metrics need not import torch, and nothing here
imports Ray or MLflow. A kind whose package does not exist yet (interpreters, until the
saliency work lands) lists nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.registry import first_line


@dataclass(frozen=True)
class PluginKind:
    """Where one kind's registry lives and how to describe an entry."""

    module: str  # the package that registers the built-in entries
    registry: str  # the registry's name in that package
    describe: Callable[[Any], str]  # entry -> one line
    optional: bool = False  # True: a missing module is an empty registry


def _doc(entry: Any) -> str:
    """A class's first docstring line, or a record's ``description`` (a field or a classmethod)."""
    d = getattr(entry, "description", None)
    if callable(d):
        d = d()
    return first_line(d) if isinstance(d, str) and d else first_line(getattr(entry, "__doc__", None))


KINDS: dict[str, PluginKind] = {
    "attacks": PluginKind("shared.attacks", "ATTACKS", _doc),
    "pruners": PluginKind("shared.pruners", "PRUNERS", _doc),
    "metrics": PluginKind("shared.metrics", "METRICS", _doc),
    "models": PluginKind("shared.models", "MODELS", _doc),
    "embedders": PluginKind("shared.embedders", "EMBEDDERS", _doc),
    "interpreters": PluginKind("shared.interpreters", "INTERPRETERS", _doc, optional=True),
}


def kinds() -> list[str]:
    return sorted(KINDS)


def registry_of(kind: str) -> Any:
    """The registry of ``kind`` (None for an optional kind whose module does not exist yet)."""
    k = KINDS[kind]
    try:
        module = importlib.import_module(k.module)
    except ModuleNotFoundError as e:
        if k.optional and e.name == k.module:
            return None
        raise
    return getattr(module, k.registry)


def listing(kind: str) -> list[tuple[str, str]]:
    """(name, one-line description) of every entry of ``kind``, sorted by name.

    Raises KeyError for an unknown kind (callers list :func:`kinds`)."""
    registry = registry_of(kind)
    if registry is None:
        return []
    if isinstance(registry, Mapping):
        entries = [(str(n), registry[n]) for n in registry]
    else:  # shared.registry.Registry: iterating gives the names
        entries = [(str(n), registry.get(n)) for n in registry]
    return sorted((n, KINDS[kind].describe(e)) for n, e in entries)
