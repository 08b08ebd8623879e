"""Saliency interpreters (SCIENCE.md §6): a base class with one hook, and their registry.

An interpreter turns ``(model, images, class c)`` into a heatmap ``h_c`` at the
model's target layer, ``[N, h, w]``. Maps are built from ordinary tensor ops on the
live graph (``torch.autograd.grad(..., create_graph=True)`` where a gradient is part
of the map), so a fooling loss on ``h_c`` backpropagates to the weights (Heo Eq. 2).
A plugin overrides :meth:`Interpreter.raw_map` and declares its normalisation; its
docstring's first line is its description.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shared.models.zoo import TARGET_LAYER, LayerError, model_info
from shared.registry import Registry

EPS = 1e-12  # keeps normalisation finite on an all-zero map (its gradient is zero there anyway)


def max_normalise(h: torch.Tensor) -> torch.Tensor:
    """Divide each map by its maximum (Grad-CAM, §6); ``h`` is ``[N, ...]`` and already >= 0."""
    top = h.flatten(1).amax(1).view(-1, *([1] * (h.dim() - 1)))
    return h / top.clamp_min(EPS)


def minmax_normalise(h: torch.Tensor) -> torch.Tensor:
    """Per-image min–max scaling to [0, 1] (SimpleGrad_T, LRP_T, and the losses' ``minmax`` of §6)."""
    flat = h.flatten(1)
    shape = (-1, *([1] * (h.dim() - 1)))
    lo, hi = flat.amin(1).view(shape), flat.amax(1).view(shape)
    return (h - lo) / (hi - lo).clamp_min(EPS)


NORMALISERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max": max_normalise,
    "minmax": minmax_normalise,
}


def upsample(h: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of maps ``[N, h, w]`` to the input size (§6: where positions are compared)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(h.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


class Explanation(NamedTuple):
    heatmap: torch.Tensor  # [N, h, w], normalised as the interpreter declares
    logits: torch.Tensor  # [N, classes] of the same forward: reuse it for L_C on the same batch


def as_target(target: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Class per image as a LongTensor ``[N]``: an int applies to every image."""
    t = torch.as_tensor(target, device=device, dtype=torch.long)
    t = t.expand(n) if t.dim() == 0 else t
    if t.shape != (n,):
        raise ValueError(
            f"target has shape {tuple(t.shape)}; expected an int or a LongTensor of shape ({n},)"
        )
    return t


def class_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_i y_{c_i}(x_i): one backward gives every image's own gradient (images are independent in eval mode)."""
    return logits.gather(1, target.view(-1, 1)).sum()


def forward_with_activation(
    model: nn.Module, layer: str, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, A)``: ``A`` is the output of module ``layer``, on the graph from the weights to the logits.

    The hook captures ``A`` and hands a clone downstream, so an in-place op that follows
    (torchvision's ``ReLU(inplace=True)``) cannot overwrite it; nothing is detached.
    """
    module = model.get_submodule(layer)
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise LayerError(
                f"layer {layer!r} returns a {type(output).__name__}; an interpreter needs a tensor"
            )
        if seen:
            raise LayerError(
                f"layer {layer!r} ran twice in one forward (a shared module); pick another layer"
            )
        if not output.requires_grad:  # frozen weights and a plain input: no graph below, start one here
            output = output.detach().requires_grad_()
        seen.append(output)
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    if not seen:
        raise LayerError(f"layer {layer!r} did not run in the forward pass of {type(model).__name__}")
    return logits, seen[0]


def layer_gradient(
    model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, A, ∂y_c/∂A)`` with the gradient kept differentiable (``create_graph=True``)."""
    logits, act = forward_with_activation(model, layer, x)
    (grad,) = torch.autograd.grad(class_score(logits, target), act, create_graph=True)
    return logits, act, grad


class Interpreter:
    """Base class: resolves the target layer and normalises; plugins implement :meth:`raw_map`."""

    name: ClassVar[str] = ""  # set by register_interpreter
    normalise: ClassVar[Literal["max", "minmax"]] = "minmax"  # applied to raw_map's output (§6)

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        """Raise :class:`LayerError` when this interpreter cannot explain ``model`` (e.g. LRP_T's rules
        cover only some architectures); a model built on the meta device is enough."""

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def raw_map(
        self, model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The hook: un-normalised map ``[N, h, w]`` at module path ``layer``, and the logits."""
        raise NotImplementedError

    def explain(
        self,
        model: nn.Module,
        model_name: str | None,
        x: torch.Tensor,
        target: int | torch.Tensor,
        layer: str | None = None,
        size: int | tuple[int, int] | None = None,
    ) -> Explanation:
        """Normalised heatmap of class ``target`` (and the logits).

        ``layer``: an alias or module path; default the model's registered target layer
        (``ModelInfo.target_layer``). ``model_name`` may be None when ``layer`` is a module
        path. ``size``: upsample bilinearly to this input size (e.g. ``x.shape[-1]``).
        """
        path = resolve_target(model, model_name, layer)
        try:
            with torch.enable_grad():  # a gradient is part of the map, even inside an evaluation's no_grad
                raw, logits = self.raw_map(model, path, x, as_target(target, len(x), x.device))
        except LayerError as e:  # name the registered model, not just its class
            if model_name is None:
                raise
            raise type(e)(f"model {model_name!r}, layer {path!r}: {e}") from e
        h = NORMALISERS[self.normalise](raw)
        return Explanation(upsample(h, size) if size is not None else h, logits)

    def heatmap(
        self,
        model: nn.Module,
        model_name: str | None,
        x: torch.Tensor,
        target: int | torch.Tensor,
        layer: str | None = None,
        size: int | tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Just the normalised map of :meth:`explain`."""
        return self.explain(model, model_name, x, target, layer, size).heatmap


def resolve_target(model: nn.Module, model_name: str | None, layer: str | None) -> str:
    """Module path of the layer an interpreter reads: explicit ``layer`` or the registry's target layer."""
    if model_name is None:
        if layer is None or layer == TARGET_LAYER:
            raise LayerError("pass model_name (a registered model) or layer (a module path of the model)")
        if layer not in dict(model.named_modules()):
            raise LayerError(
                f"{type(model).__name__} has no module {layer!r}; pass a module path or model_name"
            )
        return layer
    info = model_info(model_name)
    if layer is None and info.target_layer is None:
        raise LayerError(
            f"model {model_name!r} has no saliency target layer (ModelInfo.target_layer); pass layer=… "
            f"(valid aliases: {', '.join(info.layers)}), or register the model with target_layer=…"
        )
    return info.resolve_layer(TARGET_LAYER if layer is None else layer, model)


INTERPRETERS: Registry[type[Interpreter]] = Registry("interpreter")


def register_interpreter(name: str) -> Callable[[type[Interpreter]], type[Interpreter]]:
    """Class decorator: register an :class:`Interpreter` subclass under ``name`` (duplicates raise)."""

    def deco(cls: type[Interpreter]) -> type[Interpreter]:
        if not (isinstance(cls, type) and issubclass(cls, Interpreter)):
            raise TypeError(f"register_interpreter({name!r}) expects an Interpreter subclass, got {cls!r}")
        if not cls.description():
            raise TypeError(
                f"interpreter {name!r} ({cls.__name__}) needs a docstring: its first line describes it"
            )
        INTERPRETERS.register(name)(cls)
        cls.name = name
        return cls

    return deco


def get_interpreter(name: str) -> type[Interpreter]:
    """The registered class (instantiate it: ``get_interpreter("gradcam")()``); unknown names list the valid ones."""
    return INTERPRETERS.get(name)


def interpreter_names() -> list[str]:
    return INTERPRETERS.names()
