"""Pruning defenses (SCIENCE.md §4): norm, structured group and vulnerability pruning, in pure torch.

- Norm pruning (See et al. 2016, class-blind): one global L1 threshold over every Conv2d and
  Linear weight, unstructured. The masks stay as ``torch.nn.utils.prune`` forward pre-hooks while
  fine-tuning (pruned weights stay exactly zero); :func:`make_permanent` folds them in.
- Group pruning (our stand-in for the thesis's OTO, which no longer runs on current PyTorch):
  Torch-Pruning's dependency graph removes whole channel groups, ranked by their group L2 norm
  (the quantity :func:`sparsity_regularizer`'s sparse training drives towards zero). Priority
  ``filter`` removes conv filters, ``weight`` removes fully connected neurons (SCIENCE.md §4).
- Vulnerability pruning: remove given output channels of one conv (the units with the highest
  CLIP-δ in an earlier push-down attack, :func:`rank_by_clip_delta`).

Structured removal renumbers units, so both structured methods return an *index map*
``{module name: [kept old output index, ...]}`` (new unit ``i`` is old unit ``kept[i]``).
:func:`apply_index_map` replays it on a fresh model, which is how :func:`load_pruned` rebuilds
a pruned checkpoint (a pickled module cannot be loaded with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

METHODS = ("none", "norm", "group", "vulnerability")
PRIORITIES = ("filter", "weight")
IndexMap = dict[str, list[int]]


# --- validation ---------------------------------------------------------------------


def check_method(method: str, field: str = "method") -> str:
    if method not in METHODS:
        raise ValueError(f"{field}={method!r}: unknown pruning method; valid methods: {', '.join(METHODS)}")
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


# --- measuring ----------------------------------------------------------------------


def _weighted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses: ``weight_orig * weight_mask`` while a prune mask is attached
    (``module.weight`` is only recomputed by the next forward, so it can be stale after an optimizer step)."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return module.weight_orig * module.weight_mask
    return module.weight


@torch.no_grad()
def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros over all Conv2d and Linear weights (biases excluded)."""
    zeros = total = 0
    for _, m in _weighted(model):
        w = _weight(m)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


@torch.no_grad()
def weight_pruning_rate(model_before: nn.Module, model_after: nn.Module) -> float:
    """1 - (non-zero conv+linear weights after) / (conv+linear weights before).

    Counts weights that were removed (structured) and weights that are zero (unstructured) alike,
    so the three methods report comparable numbers. Unlike the thesis's Table 4.4, the input
    weights of the next layer that a removed filter takes with it are counted as removed.
    """
    before = sum(_weight(m).numel() for _, m in _weighted(model_before))
    nonzero = sum(int((_weight(m) != 0).sum()) for _, m in _weighted(model_after))
    return 1.0 - nonzero / max(before, 1)


@torch.no_grad()
def filter_sparsity(model_before: nn.Module, model_after: nn.Module) -> float:
    """Fraction of conv filters (output channels over all Conv2d) that are gone in ``model_after``:
    physically removed, or (unstructured) left with all-zero weights."""
    convs_after = {n: m for n, m in _weighted(model_after) if isinstance(m, nn.Conv2d)}
    total = removed = 0
    for name, m in _weighted(model_before):
        if not isinstance(m, nn.Conv2d):
            continue
        total += m.out_channels
        after = convs_after.get(name)
        if after is None:
            removed += m.out_channels
            continue
        dead = int((_weight(after).flatten(1) == 0).all(dim=1).sum())
        removed += m.out_channels - after.out_channels + dead
    return removed / max(total, 1)


# --- norm pruning -------------------------------------------------------------------


def norm_prune(model: nn.Module, rate: float) -> dict:
    """Zero the ``rate`` share of all conv+linear weights with the smallest |w| (one global threshold).

    The masks stay attached (``weight = weight_orig * weight_mask``), so fine-tuning cannot revive a
    pruned weight; call :func:`make_permanent` before saving. Returns the measured sparsity.
    """
    check_rate(rate)
    params = [(m, "weight") for _, m in _weighted(model)]
    if not params:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=rate)
    total = sum(m.weight_mask.numel() for m, _ in params)
    pruned = sum(int((m.weight_mask == 0).sum()) for m, _ in params)
    return {"rate": rate, "pruned": pruned, "total": total, "weight_sparsity": weight_sparsity(model)}


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every prune mask into its weight and drop the hooks: a plain state_dict again."""
    for m in model.modules():
        names = [
            h._tensor_name for h in m._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)
        ]
        for name in names:
            prune.remove(m, name)
    return model


# --- structured pruning -------------------------------------------------------------


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Conv/Linear modules whose output *is* the model's output (the classifier head): never pruned."""
    seen: list[tuple[torch.Tensor, str]] = []  # the tensors themselves: ids of freed ones get reused
    hooks = [
        m.register_forward_hook(lambda mod, a, out, n=n: seen.append((out, n))) for n, m in _weighted(model)
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


def _graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    was_training = model.training
    model.eval()  # tracing runs a forward: keep BatchNorm statistics and dropout out of it
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    finally:
        model.train(was_training)


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
    check_rate(rate)
    check_priority(priority)
    root, ignored = _scope(model, example_input, priority, protect)
    dg = _graph(model, example_input)
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


def vulnerability_prune(
    model: nn.Module, layer_module: str, units_to_remove: Sequence[int], example_input: torch.Tensor
) -> tuple[nn.Module, IndexMap]:
    """Remove output channels ``units_to_remove`` of the conv ``layer_module`` (a module path).

    A non-conv path such as AlexNet's ``features.11`` (the ReLU behind the ``conv5`` alias) means
    the conv that feeds it: the last Conv2d registered before it, which is right for
    Sequential stacks like AlexNet. Returns the model (changed in place) and its index map.
    """
    name = conv_for(model, layer_module)
    conv = model.get_submodule(name)
    units = [int(u) for u in units_to_remove]
    bad = sorted({u for u in units if not 0 <= u < conv.out_channels})
    if not units or bad or len(set(units)) != len(units) or len(units) >= conv.out_channels:
        raise ValueError(
            f"units_to_remove={list(units_to_remove)!r}: need 1..{conv.out_channels - 1} distinct unit "
            f"indices in 0..{conv.out_channels - 1} of {name}" + (f" (out of range: {bad})" if bad else "")
        )
    gone = set(units)
    index_map = {name: [i for i in range(conv.out_channels) if i not in gone]}
    return apply_index_map(model, index_map, example_input), index_map


def conv_for(model: nn.Module, layer: str) -> str:
    """The module path of the conv whose output channels are the units of ``layer``."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"layer_module={layer!r}: no such module in {type(model).__name__}")
    if isinstance(modules[layer], nn.Conv2d):
        return layer
    last = None
    for n, m in modules.items():
        if n == layer:
            break
        if isinstance(m, nn.Conv2d):
            last = n
    if last is None:
        raise ValueError(f"layer_module={layer!r}: it is not a Conv2d and no Conv2d comes before it")
    return last


def apply_index_map(
    model: nn.Module, index_map: Mapping[str, Sequence[int]], example_input: torch.Tensor
) -> nn.Module:
    """Keep only ``index_map[name]`` output channels of each named layer (and what depends on them)."""
    dg = _graph(model, example_input)
    for name, kept in index_map.items():
        module = model.get_submodule(name)
        n = dg.get_out_channels(module)
        keep = [int(i) for i in kept]
        if n == len(keep):  # already done through a coupled layer of the same group
            continue
        if not keep or keep != sorted(set(keep)) or keep[-1] >= n:
            raise ValueError(
                f"index_map[{name!r}] must list 1..{n - 1} increasing unit indices below {n}, got {keep[:8]}…"
            )
        drop = sorted(set(range(n)) - set(keep))
        group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, drop)
        if not dg.check_pruning_group(group):
            raise ValueError(f"cannot remove {len(drop)} of {n} outputs of {name}: it would empty a layer")
        group.prune()
    return model


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


def rank_by_clip_delta(unit_metrics_table: pa.Table, n: int) -> list[int]:
    """The ``n`` units with the highest ``clip_delta`` (NaN last; ties: lower unit index first)."""
    names = set(unit_metrics_table.column_names)
    if not {"unit", "clip_delta"} <= names:
        raise ValueError(f"unit metrics table needs columns 'unit' and 'clip_delta', has {sorted(names)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= unit_metrics_table.num_rows:
        raise ValueError(
            f"n={n!r}: must be an integer in 1..{unit_metrics_table.num_rows} (the table's units)"
        )
    units = unit_metrics_table.column("unit").to_numpy(zero_copy_only=False).astype(np.int64)
    cd = unit_metrics_table.column("clip_delta").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.lexsort((units, -np.where(np.isnan(cd), -np.inf, cd)))
    return [int(units[i]) for i in order[:n]]


# --- checkpoints of structured models ------------------------------------------------


def load_pruned(model_uri: str) -> nn.Module:
    """Load a checkpoint written by ``jobs.prune``: unpruned and norm-pruned ones load as they are;
    structured ones are rebuilt from the index map in the checkpoint's meta, then the state_dict
    is loaded strictly. The skeleton is a randomly initialised model: every parameter and buffer
    is overwritten by the strict load, so the base weights need not be reachable."""
    from shared.models import model_info, read_checkpoint

    ckpt = read_checkpoint(model_uri)
    if ckpt["model"] is None:
        raise ValueError(f"{model_uri} is a bare state_dict: it does not say which model it is")
    info = model_info(ckpt["model"])
    model = info.builder(int(ckpt["num_classes"]))
    index_map = ckpt["meta"].get("index_map")
    if index_map:
        crop = info.preprocess.crop
        apply_index_map(model, index_map, torch.zeros(1, 3, crop, crop))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
