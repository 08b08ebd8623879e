"""The first family: the thesis's attacks on top-k feature visualizations (SCIENCE.md §2-§3).

Everything the orchestrator and jobs know about ``finetune``, ``push-down``, ``push-up``
and ``push-up-pairwise`` is declared here: the ``attacks[i]`` config, how an entry
expands over the sweep's layers, which entries the α controller drives, the metrics and
report columns, and the extra images each step forwards (``vizsweep plan``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shared.attacks import builtin as _builtin  # noqa: F401  (registers the attack classes)
from shared.attacks.base import get_attack
from shared.attacks.checks import empty_class_problems, unit_problems
from shared.attacks.family import MAX_IMAGES, AttackConfig, AttackFamily, ConfigProblem, register_family

Scope = Literal["layer", "unit", "layers"]


class FeatureVizAttack(AttackConfig):
    """One attack of the thesis's family and its scope; units listed together are attacked together."""

    name: Literal["finetune", "push-down", "push-up", "push-up-pairwise"]
    scope: Scope = "layer"  # layer: one trial per layer | unit: the listed units | layers: all at once
    units: tuple[int, ...] | None = None  # unit indices (scope: unit)
    k: int = Field(
        10, ge=1, le=MAX_IMAGES
    )  # D_attack: the initial top-k images of each unit; s_j averages over them
    scale: Literal["unit", "none"] = "unit"  # "unit": L_A divided by s_j; "none": the thesis's raw loss
    decoy_class: int = Field(1, ge=0)  # push-up: label of the decoy class (ImageNet: goldfish)
    decoy_images: int = Field(
        100, ge=1, le=MAX_IMAGES
    )  # push-up: |D_decoy|, random train images of that class
    attack_batch_size: int | None = Field(64, ge=1)  # push-down: D_attack images per step (null: all)
    decoy_batch_size: int | None = Field(32, ge=1)  # push-up-pairwise: D_decoy images per step (null: all)

    @field_validator("units")
    @classmethod
    def _units(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must not be empty; list unit indices, e.g. [0, 3]")
        bad = [u for u in v if u < 0]
        if bad:
            raise ValueError(f"unit indices must be >= 0, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"lists a unit twice: {list(v)}")
        return tuple(sorted(v))  # [3, 1] and [1, 3] are one attack: same key, same duplicate check

    @model_validator(mode="after")
    def _scope(self) -> FeatureVizAttack:
        if self.scope == "unit" and self.units is None:
            raise ConfigProblem("units", "scope 'unit' needs units: [j, ...] (unit indices in each layer)")
        if self.scope != "unit" and self.units is not None:
            raise ConfigProblem(
                "units",
                f"units apply to scope 'unit' only, not {self.scope!r}; set scope: unit or drop units",
            )
        return self


@register_family
class FeatureViz(AttackFamily):
    """The thesis's attacks on top-k feature visualizations (push-down, push-up) and their control."""

    name = "featureviz"
    description = __doc__
    config = FeatureVizAttack
    attacks = ("finetune", "push-down", "push-up", "push-up-pairwise")  # control first (Table 3.1)
    runner = "finetuning"
    data = "unit-targets"
    metrics = ("clip_delta", "kendall_tau", "clip_w", "kendall_tau_w", "topk_overlap", "acc", "delta_acc")
    report_columns = metrics

    @classmethod
    def scopes(cls, entry: FeatureVizAttack, layers: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        return (tuple(layers),) if entry.scope == "layers" else tuple((layer,) for layer in layers)

    @classmethod
    def units(cls, entry: FeatureVizAttack) -> str | tuple[int, ...]:
        return "all" if entry.units is None else entry.units

    @classmethod
    def job_config(cls, entry: FeatureVizAttack) -> dict:
        """What changes the attacked model: loss settings, and the image sets only the attack uses."""
        uses = getattr(get_attack(entry.name), "uses", ())
        out = {"k": entry.k, "scale": entry.scale}
        if "attack" in uses:
            out["attack_batch_size"] = entry.attack_batch_size
        if "decoy" in uses:
            out |= {"decoy_class": entry.decoy_class, "decoy_images": entry.decoy_images}
            if not getattr(get_attack(entry.name), "all_decoys", False):
                out["decoy_batch_size"] = entry.decoy_batch_size
        return out

    @classmethod
    def extra_images_per_step(cls, entry: FeatureVizAttack) -> int:
        attack = get_attack(entry.name)
        uses = getattr(attack, "uses", ())
        n = entry.attack_batch_size or 0 if "attack" in uses else 0
        if "decoy" in uses:
            n += entry.decoy_images if attack.all_decoys else entry.decoy_batch_size or entry.decoy_images
        return n

    @classmethod
    def spec_problems(cls, entry: FeatureVizAttack, parts: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Its trials need the sweep's layers; the decoy class must exist in the dataset."""
        out = []
        if parts.get("layers") == ():
            out.append(("name", f"{entry.name!r} attacks the sweep's layers: give layers: [...]"))
        classes = parts.get("classes")
        uses = getattr(get_attack(entry.name), "uses", ())
        if "decoy" in uses and classes is not None and entry.decoy_class >= classes:
            out.append(("decoy_class", f"{entry.decoy_class}: the dataset has classes 0..{classes - 1}"))
        elif "decoy" in uses:
            out += [("decoy_class", m) for m in empty_class_problems(parts, (entry.decoy_class,))]
        ds, sizes = parts.get("dataset"), parts.get("sizes") or {}
        train = getattr(ds, "train_split", "train")
        if sizes.get(train) is not None and entry.k > sizes[train]:
            msg = f"{entry.k}: the train split {train!r} has {sizes[train]:,} images, fewer than k"
            out.append(("k", f"{msg} (each unit's top-k images come from it); use k <= {sizes[train]:,}"))
        return out + unit_problems(entry.units, parts)

    @classmethod
    def describe(cls, entry: FeatureVizAttack) -> str:
        return (
            entry.name if entry.scope != "unit" else f"{entry.name}-u{'.'.join(map(str, entry.units or ()))}"
        )
