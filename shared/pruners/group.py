"""Group pruning (SCIENCE.md §4; our stand-in for the thesis's OTO, which no longer runs on current
PyTorch): Torch-Pruning's dependency graph removes whole channel groups, ranked by their group L2
norm, the quantity :func:`sparsity_regularizer`'s sparse training drives towards zero. Priority
``filter`` removes conv filters, ``weight`` removes fully connected neurons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from shared.models.surgery import IndexMap, apply_index_map, dependency_graph
from shared.pruners.base import (
    PRIORITIES,
    Problems,
    PruneContext,
    Pruner,
    ReportTable,
    check_priority,
    check_rate,
    register_pruner,
)
from shared.pruners.measure import weighted


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Conv/Linear modules whose output *is* the model's output (the classifier head): never pruned."""
    seen: list[tuple[torch.Tensor, str]] = []  # the tensors themselves: ids of freed ones get reused
    hooks = [
        m.register_forward_hook(lambda mod, a, out, n=n: seen.append((out, n))) for n, m in weighted(model)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, tuple | list) else [out]
    return [n for t, n in seen if any(t is o for o in outs)]


def _scope(model: nn.Module, example_input: torch.Tensor, priority: str, protect: Iterable[str]):
    """Root module type and the modules that must keep all their outputs (protected + the head)."""
    names = dict(model.named_modules())
    unknown = [p for p in protect if p not in names]
    if unknown:
        raise ValueError(f"protect={unknown!r}: no such module in {type(model).__name__}")
    keep = {*protect, *output_layers(model, example_input)}
    root = nn.Conv2d if priority == "filter" else nn.Linear
    return root, [names[n] for n in sorted(keep)]


def group_prune(
    model: nn.Module,
    rate: float,
    example_input: torch.Tensor,
    priority: str = "filter",
    protect: Sequence[str] = (),
) -> tuple[nn.Module, IndexMap]:
    """Remove ``round(rate * C)`` output channels of every conv (``filter``) or hidden Linear (``weight``).

    Each channel's group (its filter and bias plus the next layers' input weights, as Torch-Pruning's
    dependency graph couples them) is ranked by its L2 norm; the weakest go (ties: lower index first).
    All choices are made on the unpruned model, then applied, so the result does not depend on
    layer order. The classifier output and the modules named in ``protect`` keep all their outputs.
    Returns the model (changed in place, physically smaller) and its index map.
    """
    import torch_pruning as tp

    check_rate(rate)
    check_priority(priority)
    root, ignored = _scope(model, example_input, priority, protect)
    dg = dependency_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    importance = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    index_map: IndexMap = {}
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=[root]):
        scores = importance(group)
        n = len(scores)
        n_drop = min(round(rate * n), n - 1)  # a layer always keeps one unit
        if n_drop <= 0:
            continue
        drop = set(torch.sort(scores.float().cpu(), stable=True).indices[:n_drop].tolist())
        kept = [i for i in range(n) if i not in drop]
        for dep, _ in group:  # coupled layers (e.g. residual adds) share the choice
            if dg.is_out_channel_pruning_fn(dep.handler) and isinstance(
                dep.target.module, nn.Conv2d | nn.Linear
            ):
                index_map[names[dep.target.module]] = kept
    order = {n: i for i, n in enumerate(names.values())}
    index_map = dict(sorted(index_map.items(), key=lambda kv: order[kv[0]]))  # model order, for readers
    return apply_index_map(model, index_map, example_input), index_map


def sparsity_regularizer(
    model: nn.Module,
    example_input: torch.Tensor,
    priority: str = "filter",
    protect: Sequence[str] = (),
    reg: float = 1e-4,
) -> Callable[[], None]:
    """Torch-Pruning's group-norm sparse training (DepGraph, Fang et al. 2023): call the returned
    function after ``loss.backward()`` and before ``optimizer.step()``; it adds ``reg * γ * w`` to the
    gradients of the groups :func:`group_prune` will rank, pushing the weakest groups to zero."""
    import torch_pruning as tp

    check_priority(priority)
    root, ignored = _scope(model, example_input, priority, protect)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the dependency graph is traced through autograd
            pruner = tp.pruner.GroupNormPruner(
                model,
                example_input,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                reg=reg,
                ignored_layers=ignored,
                root_module_types=[root],
            )
    finally:
        model.train(was_training)
    return lambda: pruner.regularize(model)


@register_pruner("group")
class GroupPruning(Pruner):
    """Group-sparse training, then remove the weakest channel groups per layer (Torch-Pruning, structured)."""

    order = 2
    tables = {
        "weight": ReportTable("Table 4.2", "Table E", "group-sparsity pruning, weight priority (Torch-Pruning)",
                              "Target group sparsity", "target group sparsity", "group pruning, weight priority"),
        "filter": ReportTable("Table 4.3", "Table F", "group-sparsity pruning, filter priority (Torch-Pruning)",
                              "Target group sparsity", "target group sparsity", "group pruning, filter priority"),
    }  # fmt: skip

    def prune(self, model: nn.Module, settings: Any, ctx: PruneContext) -> tuple[nn.Module, IndexMap]:
        if settings.sparse_epochs:
            reg = sparsity_regularizer(
                model, ctx.example, settings.priority, list(ctx.protect), settings.sparse_reg
            )
            ctx.train(model, settings.sparse_epochs, "sparse", reg)
        return group_prune(model, settings.rate, ctx.example, settings.priority, protect=list(ctx.protect))

    @classmethod
    def setting_problems(cls, settings: Any) -> Problems:
        problems = super().setting_problems(settings)
        if settings.priority not in PRIORITIES:
            problems.append(("priority", f"method 'group' needs a priority in {', '.join(PRIORITIES)}"))
        return problems

    @classmethod
    def variant(cls, priority: str | None) -> str:
        return priority or "filter"

    @classmethod
    def priority_label(cls, settings: Any) -> str:
        return settings.priority  # group pruning's two settings share method and rate

    @classmethod
    def units_after(cls, units: Mapping[str, int], settings: Any) -> dict[str, int]:
        return {k: max(1, round(v * (1 - settings.rate))) for k, v in units.items()}

    @classmethod
    def extra_epochs(cls, settings: Any) -> int:
        return settings.sparse_epochs
