"""Index-map surgery: remove output channels of named layers, and everything that depends on them.

Structured pruning (SCIENCE.md §4) renumbers units, so a pruned model is described by an *index
map* ``{module name: [kept old output index, ...]}`` (new unit ``i`` is old unit ``kept[i]``).
The same map is replayed in two places: by the pruners when they cut a model, and by
:func:`shared.models.zoo.load_checkpoint` when it rebuilds a pruned checkpoint's smaller shape
before a strict ``load_state_dict`` (a pickled module cannot be loaded with ``weights_only=True``).
One implementation serves both, so a checkpoint always loads into the shape that was saved.

Torch-Pruning is imported on first use: it pulls in torchvision, which processes that only build
or load unpruned models (and ``vizsweep list``) need not pay for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from shared.models.layout import fast_layout

IndexMap = dict[str, list[int]]


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> Any:
    """Torch-Pruning's ``DependencyGraph`` of ``model``, traced in eval mode (BatchNorm statistics
    and dropout stay out of the tracing forward) with autograd on (the graph is traced through it)."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    finally:
        model.train(was_training)


def apply_index_map(
    model: nn.Module, index_map: Mapping[str, Sequence[int]], example_input: torch.Tensor
) -> nn.Module:
    """Keep only ``index_map[name]`` output channels of each named layer (and what depends on them).

    Changes ``model`` in place and returns it. Layers coupled in one Torch-Pruning group (e.g. the
    two sides of a residual add) share one choice: the second of them is found already cut.
    """
    dg = dependency_graph(model, example_input)
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
    return fast_layout(model)  # the pruned layers' new weights come out contiguous


def rebuild(model: nn.Module, index_map: Mapping[str, Sequence[int]], crop: int) -> nn.Module:
    """:func:`apply_index_map` with a zero image of side ``crop`` as the tracing input (checkpoint loading:
    the weights are overwritten by the strict load that follows, so only the shape matters)."""
    return apply_index_map(model, index_map, torch.zeros(1, 3, crop, crop))
