"""A pruning defense (SCIENCE.md §4) is a small class with one hook, :meth:`Pruner.prune`, plus what
the rest of the system must know about it, declared on the class (STYLE.md "Declare, don't
dispatch"): its settings' rules, its report tables, whether it needs a ranking run first, its
cost in ``vizsweep plan`` and its display order. The orchestrator and the pruning job look these
up in :data:`PRUNERS` instead of listing method names.

Settings reach a pruner as duck-typed objects: the sweep spec's ``PruningSpec`` (rate, count,
priority, layer, epochs, sparse_epochs) and the job's ``jobs.prune.PruneSpec`` (rate, priority,
units, layer, sparse_epochs, sparse_reg). Only the fields a method reads must exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from shared.models.surgery import IndexMap
from shared.registry import Registry, first_line

PRIORITIES = ("filter", "weight")  # group pruning: conv filters or fully connected neurons
Problems = list[tuple[str, str]]  # (field of the setting, message), as the sweep spec reports them


@dataclass(frozen=True)
class ReportTable:
    """How one pruned-model table and its attack table are titled (thesis Tables 4.1–4.4 and C–F)."""

    number: str  # the thesis's pruned-model table, e.g. "Table 4.1"
    attack_number: str  # the thesis's attack-results table, e.g. "Table D"
    caption: str  # what was pruned and how
    rate_name: str  # header of the rate column (what the rate counts)
    x_label: str  # x axis of the report's accuracy / CLIP-δ plot (Figures 4.1–4.4)
    title: str  # the plot's title, before ", then attack"


@dataclass(frozen=True)
class PruneContext:
    """What the pruning job hands a pruner besides the model and the settings."""

    example: torch.Tensor  # one zero image at the model's crop, on the model's device (graph tracing)
    protect: tuple[str, ...]  # module paths that keep all their outputs (the classifier head)
    resolve_layer: Callable[[str], str]  # layer alias or module path -> module path
    # train(model, epochs, phase, after_backward): an extra training phase before the removal
    # (group pruning's sparse training); its history goes into the job's manifest
    train: Callable[[nn.Module, int, str, Callable[[], None] | None], None]


class Pruner:
    """Base class: override :meth:`prune`; set the class attributes below that differ."""

    name: ClassVar[str] = ""  # registry name, set by register_pruner
    order: ClassVar[int] = 100  # display order in reports (the unpruned control first)
    prunes: ClassVar[bool] = True  # False: the control, the base model is attacked as it is
    takes_units: ClassVar[bool] = False  # the job's settings list the units to remove
    # the attack whose per-unit CLIP-δ on the base model ranks the units to remove (run first)
    ranking_attack: ClassVar[str | None] = None
    # report tables per variant ("" when the method has one), in display order
    tables: ClassVar[Mapping[str, ReportTable]] = {}

    def prune(self, model: nn.Module, settings: Any, ctx: PruneContext) -> tuple[nn.Module, IndexMap | None]:
        """Prune ``model`` (in place where possible); returns the model and, for structured methods,
        its index map (:mod:`shared.models.surgery`), else None."""
        raise NotImplementedError(f"{type(self).__name__} must implement prune()")

    # --- declarations with defaults ---------------------------------------------------

    @classmethod
    def description(cls) -> str:
        return first_line(cls.__doc__)

    @classmethod
    def setting_problems(cls, settings: Any) -> Problems:
        """The sweep spec's rules for this method's settings (``rate``, ``count``, ``priority``)."""
        if not settings.rate > 0:
            return [("rate", f"method {cls.name!r} needs a rate in (0, 1), e.g. 0.5")]
        return []

    @classmethod
    def check_job(cls, rate: float, units: tuple[int, ...], where: str = "PruneSpec") -> None:
        """Raise ValueError when the pruning job's ``rate`` / ``units`` do not fit this method."""
        check_rate(rate, f"{where}.rate")
        if units:
            raise ValueError(f"{where}.units={units!r}: {_unit_takers()} units")

    @classmethod
    def variant(cls, priority: str | None) -> str:
        """Which of :attr:`tables` a setting or report row belongs to ("" for one-table methods)."""
        return ""

    @classmethod
    def report_key(cls, variant: str = "") -> str:
        """Stable name of one of :attr:`tables`, e.g. "norm" or "group-weight" (plot file names)."""
        return f"{cls.name}-{variant}" if variant else cls.name

    @classmethod
    def format_rate(cls, rate: float) -> str:
        """A report row's ``prune_rate`` as a table header shows it (a share by default)."""
        return f"{100 * rate:g}%"

    @classmethod
    def rate_label(cls, settings: Any) -> float:
        """The number a variant and its report rows carry as ``prune_rate`` for these spec settings."""
        return float(settings.rate)

    @classmethod
    def priority_label(cls, settings: Any) -> str:
        """What a variant and its report rows carry as ``prune_priority`` ("" when it means nothing)."""
        return ""

    @classmethod
    def units_after(cls, units: Mapping[str, int], settings: Any) -> dict[str, int]:
        """Units per layer of the pruned variant (``vizsweep plan``'s table sizes)."""
        return dict(units)

    @classmethod
    def extra_epochs(cls, settings: Any) -> int:
        """Training epochs before the removal, on top of the fine-tuning ``epochs`` (``vizsweep plan``)."""
        return 0


PRUNERS: Registry[type[Pruner]] = Registry("pruner")


def register_pruner(name: str) -> Callable[[type[Pruner]], type[Pruner]]:
    """Class decorator: register a :class:`Pruner` subclass under ``name`` (duplicates raise)."""

    def deco(cls: type[Pruner]) -> type[Pruner]:
        if not (isinstance(cls, type) and issubclass(cls, Pruner)):
            raise TypeError(f"register_pruner({name!r}) needs a Pruner subclass, got {cls!r}")
        PRUNERS.register(name)(cls)
        cls.name = name
        return cls

    return deco


def get_pruner(name: str) -> type[Pruner]:
    """The registered class; an unknown name raises RegistryError listing the valid ones."""
    return PRUNERS.get(name)


def pruner_names() -> list[str]:
    """Registered methods in display order (the unpruned control first), then by name."""
    return sorted(PRUNERS, key=lambda n: (PRUNERS.get(n).order, n))


def report_tables() -> list[tuple[type[Pruner], str]]:
    """(pruner, variant) of every pruned-model table, in display order (thesis Tables 4.1–4.4)."""
    return [(PRUNERS.get(n), v) for n in pruner_names() for v in PRUNERS.get(n).tables]


def table_of(method: Any, priority: str | None = None) -> tuple[type[Pruner], str] | None:
    """The (pruner, variant) table a report row of ``method`` belongs to; None for the unpruned
    control, a row without a method, or a method no longer registered (its row is left out)."""
    cls = PRUNERS.get(method) if isinstance(method, str) and method in PRUNERS else None
    if cls is None or cls.variant(priority) not in cls.tables:
        return None
    return cls, cls.variant(priority)


def check_method(method: str, field: str = "method") -> str:
    if method not in PRUNERS:
        raise ValueError(
            f"{field}={method!r}: unknown pruning method; valid methods: {', '.join(pruner_names())}"
        )
    return method


def check_rate(rate: float, field: str = "rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < rate < 1.0:
        raise ValueError(
            f"{field}={rate!r}: must be a fraction with 0 < rate < 1 (e.g. 0.125 ... 0.875), "
            f"the share of weights (norm) or of units per layer (group) that is removed"
        )
    return float(rate)


def check_priority(priority: str, field: str = "priority") -> str:
    if priority not in PRIORITIES:
        raise ValueError(
            f"{field}={priority!r}: unknown group-pruning priority; valid: {', '.join(PRIORITIES)} "
            f"(filter = conv filters, weight = fully connected neurons)"
        )
    return priority


def _unit_takers() -> str:
    takers = [repr(n) for n in pruner_names() if PRUNERS.get(n).takes_units]
    if len(takers) == 1:
        return f"only method {takers[0]} takes"
    return f"only methods {', '.join(takers)} take" if takers else "no method takes"
