"""The sweep spec: one YAML file -> frozen, typed pydantic models, rejected before Ray starts.

- :func:`load_spec` checks what the file alone decides (types, keys, registries, across
  sections); ``check_environment=True`` adds :func:`validate_spec`'s checks to one report.
- :func:`validate_spec` checks what this machine decides (paths exist, resources are possible).

``schema`` holds the models, ``reader`` the safe YAML reading and the error messages,
``checks`` the machine's checks. The models import torch (through the model and attack
registries), so they load only after the YAML has been read: the names below that live
there are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.spec.reader import MAX_DEPTH, MAX_NODES, SpecError, load_spec, validate_spec

if TYPE_CHECKING:
    from orchestrator.spec.schema import (
        NAME_PATTERN,
        PRETRAIN,
        PRUNING_METHODS,
        REFERENCE_EMBEDDER,
        AttackEntry,
        DatasetSpec,
        MetricsSettings,
        ModelSpec,
        PruningSpec,
        ResourcesSpec,
        SweepSpec,
        SynthSpec,
        TrainingSpec,
        default_tracking_uri,
        json_schema,
        spec_model,
        weights_kind,
    )

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "SpecError",
    "load_spec",
    "validate_spec",
    "NAME_PATTERN",
    "PRETRAIN",
    "PRUNING_METHODS",
    "REFERENCE_EMBEDDER",
    "AttackEntry",
    "DatasetSpec",
    "MetricsSettings",
    "ModelSpec",
    "PruningSpec",
    "ResourcesSpec",
    "SweepSpec",
    "SynthSpec",
    "TrainingSpec",
    "default_tracking_uri",
    "json_schema",
    "spec_model",
    "weights_kind",
]
_SCHEMA = frozenset(__all__[5:])  # the names that live in schema.py, imported on first use


def __getattr__(name: str) -> Any:
    if name in _SCHEMA:
        from orchestrator.spec import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'orchestrator.spec' has no attribute {name!r}")
