"""The unpruned control (SCIENCE.md §4): every sweep's base model, attacked as it is."""

from __future__ import annotations

from typing import Any

from torch import nn

from shared.pruners.base import Problems, PruneContext, Pruner, register_pruner


@register_pruner("none")
class NoPruning(Pruner):
    """No pruning: the base model as it is (the control every pruned variant is compared with)."""

    order = 0
    prunes = False

    def prune(self, model: nn.Module, settings: Any, ctx: PruneContext) -> tuple[nn.Module, None]:
        return model, None

    @classmethod
    def setting_problems(cls, settings: Any) -> Problems:
        if settings.rate != 0 or settings.count:
            return [("rate", f"method 'none' prunes nothing, so rate must be 0.0, not {settings.rate}")]
        return []

    @classmethod
    def check_job(cls, rate: float, units: tuple[int, ...], where: str = "PruneSpec") -> None:
        if rate != 0 or units:
            raise ValueError(
                f"{where}.rate={rate!r}, units={units!r}: method 'none' prunes nothing, "
                "so rate must be 0.0 and units empty"
            )
