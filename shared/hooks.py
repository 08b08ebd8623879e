"""Unit scores by forward hooks (SCIENCE.md §1).

``a_{l,j}(x) = ‖f^{(l,j)}(x)‖²``: channel ``j``'s activation map squared and summed
over all spatial positions; for a ViT block output ``(N, tokens, D)`` unit ``j`` is
hidden dimension ``j`` and the sum runs over all tokens (CLS included); for a
linear output ``(N, J)`` it is the squared scalar. The output is cloned when the
hook fires, so an in-place op later in the forward cannot change it (torchvision's
AlexNet ReLUs are in-place).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shared.models.zoo import LayerError, model_info


def unit_scores(output: torch.Tensor) -> torch.Tensor:
    """Per-unit squared L2 norms of a layer output, float32 ``[N, J]``."""
    if not isinstance(output, torch.Tensor):
        raise LayerError(
            f"layer output is a {type(output).__name__}, not a tensor; hook a module that returns one"
        )
    # Squares of bf16 activations overflow or lose digits; score in float32 whatever autocast says.
    dev = output.device.type
    no_autocast = (
        torch.autocast(device_type=dev, enabled=False) if dev in ("cpu", "cuda") else contextlib.nullcontext()
    )
    with no_autocast:
        a = output.float()
        if a.dim() == 2:  # (N, J): fully connected units
            return a.pow(2)
        if a.dim() == 3:  # (N, tokens, D): transformer block, unit = hidden dim
            return a.pow(2).sum(dim=1)
        if a.dim() >= 4:  # (N, C, *spatial): conv maps
            return a.pow(2).sum(dim=tuple(range(2, a.dim())))
    raise LayerError(
        f"cannot score a layer output of shape {tuple(output.shape)}: expected 2, 3 or >= 4 dims"
    )


class _StopForward(Exception):
    """Raised from a hook to end a forward once every requested layer has fired."""


class UnitScores:
    """Context manager that records unit scores of ``layers`` on every forward of ``model``.

    After ``model(x)`` (or :meth:`run`) inside the context, ``scores[layer]`` is a
    float32 ``[N, J_l]`` tensor, keyed by the names passed in. ``detach=False``
    keeps the autograd graph so attacks can backpropagate through the scores.
    """

    def __init__(self, model: nn.Module, model_name: str, layers: Sequence[str], detach: bool = True) -> None:
        if isinstance(layers, str):
            raise TypeError(f"layers must be a list of names, got the string {layers!r}; use [{layers!r}]")
        if not layers:
            raise ValueError(
                f"no layers given for {model_name!r}; valid aliases: {', '.join(model_info(model_name).layers)}"
            )
        info = model_info(model_name)
        self.model, self.model_name, self.detach = model, model_name, detach
        self.paths = {layer: info.resolve_layer(layer, model) for layer in layers}
        self.scores: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._in_forward = False
        self._stop_early = False

    def __enter__(self) -> UnitScores:
        modules = dict(self.model.named_modules())
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._on_start))
            self._handles.append(self.model.register_forward_hook(self._on_end))
            for layer, path in self.paths.items():
                hook = functools.partial(self._on_layer, layer, path)
                self._handles.append(modules[path].register_forward_hook(hook))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()  # errors propagate: nothing here swallows them

    def run(self, x: torch.Tensor, stop_early: bool = False) -> torch.Tensor | None:
        """Forward ``x`` and return the logits; ``stop_early`` ends the forward after the last hooked layer (returns None)."""
        self._stop_early = stop_early
        try:
            return self.model(x)
        except _StopForward:
            return None
        finally:
            self._stop_early = False
            self._in_forward = False

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _on_start(self, module: nn.Module, args: Any) -> None:
        self.scores = {}
        self._in_forward = True

    def _on_end(self, module: nn.Module, args: Any, output: Any) -> None:
        self._in_forward = False

    def _on_layer(self, layer: str, path: str, module: nn.Module, args: Any, output: Any) -> None:
        if self._in_forward and layer in self.scores:
            raise LayerError(
                f"module {path!r} (layer {layer!r}) ran twice in one forward of {self.model_name!r}: it is shared "
                f"(like ResNet's Bottleneck.relu), so its score would be ambiguous; hook a module that runs once"
            )
        copy = output.detach().clone() if self.detach else output.clone()
        self.scores[layer] = unit_scores(copy)
        if self._stop_early and len(self.scores) == len(self.paths):
            raise _StopForward


def unit_count(model_name: str, layer: str, model: nn.Module | None = None) -> int:
    """``J_l``, the number of units of ``layer``: from ``model`` when given (pruned models differ), else the registry."""
    if model is None:
        return _registry_unit_count(model_name, layer)
    info = model_info(model_name)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    crop = info.preprocess.crop
    was_training = model.training
    model.eval()  # batch 1 through BatchNorm in training mode fails or perturbs running stats
    try:
        with torch.no_grad(), UnitScores(model, model_name, [layer]) as rec:
            rec.run(torch.zeros(1, 3, crop, crop, device=device), stop_early=True)
    finally:
        model.train(was_training)
    return int(rec.scores[layer].shape[1])


@functools.lru_cache(maxsize=256)
def _registry_unit_count(model_name: str, layer: str) -> int:
    # A forward on the meta device: shapes without weights or arithmetic.
    info = model_info(model_name)
    with torch.device("meta"):
        model = info.builder(info.num_classes).eval()
    crop = info.preprocess.crop
    with torch.no_grad(), UnitScores(model, model_name, [layer]) as rec:
        rec.run(torch.empty(1, 3, crop, crop, device="meta"), stop_early=True)
    return int(rec.scores[layer].shape[1])
