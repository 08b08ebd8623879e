"""The image embedder ``e(x)`` of SCIENCE.md §3 behind one interface, and its registry.

:class:`Embedder` does the shared work (decoding, batching, device, no-grad,
L2 normalisation); a subclass sets up its model and implements two small hooks,
``_preprocess`` (one PIL image -> tensor) and ``_forward`` (a batch -> features).
Every metric records :meth:`Embedder.describe`, so a CLIP-δ value always says
which encoder and which weights produced it.

Specs (for configs and the CLI) are strings or dicts::

    "open_clip"                          # ViT-B-32, OpenAI weights
    "open_clip:ViT-B-32:openai"          # open_clip:<model>[:<pretrained tag | path | s3:// URI>]
    "reference:s3://bucket/models/k/model.pt"
    {"name": "open_clip", "model_name": "ViT-B-32", "pretrained": "/weights/b32.bin"}
"""

from __future__ import annotations

import inspect
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from shared.device import pick_device
from shared.registry import Registry

ImageLike = bytes | bytearray | memoryview | Image.Image


class EmbedderError(ValueError):
    """A spec cannot be parsed, an image cannot be decoded, or weights cannot be had."""


class Embedder(ABC):
    """``embed_images`` -> float32 [N, dim], each row L2-normalised (a zero feature vector stays zero)."""

    name: ClassVar[str] = ""  # registry name, set by register_embedder
    dim: int  # embedding size, set by the subclass's __init__

    def __init__(self, device: str = "auto") -> None:
        self.device = pick_device(device)

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able record of what produces the embeddings: ``kind``, ``spec`` (get_embedder rebuilds it), ``dim``, …"""

    @abstractmethod
    def _preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB image -> the model's input tensor [C, H, W] (CPU)."""

    @abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on ``self.device`` -> features [B, dim] (not yet normalised)."""

    def embed_images(self, images: Sequence[ImageLike], batch_size: int = 64) -> np.ndarray:
        """Embed encoded images (JPEG/PNG bytes) or PIL images; row ``i`` belongs to ``images[i]``.

        An undecodable image is an error, not a skipped row: the rows must stay
        aligned with the top-k lists they are compared over.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be >= 1")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = torch.stack([self._preprocess(_to_pil(im, start + i)) for i, im in enumerate(chunk)])
            with torch.inference_mode():
                feats = self._forward(batch.to(self.device)).float()
                if feats.shape != (len(chunk), self.dim):
                    raise RuntimeError(
                        f"{type(self).__name__}._forward returned shape {tuple(feats.shape)}, "
                        f"expected ({len(chunk)}, {self.dim})"
                    )
                out[start : start + len(chunk)] = F.normalize(feats, dim=1).cpu().numpy()
        return out

    @classmethod
    def parse_args(cls, args: str | None) -> dict[str, Any]:
        """The part of a spec string after ``name:`` (None: no colon) -> constructor kwargs."""
        if args is None:
            return {}
        raise EmbedderError(f"embedder {cls.name!r} takes no arguments in a spec string, got {args!r}")


def _to_pil(image: ImageLike, index: int) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if not isinstance(image, bytes | bytearray | memoryview):
        raise TypeError(f"image {index} is a {type(image).__name__}; expected encoded bytes or a PIL.Image")
    try:
        with Image.open(io.BytesIO(image)) as im:
            return im.convert("RGB")  # forces a full decode: a truncated file fails here
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, …
        raise EmbedderError(
            f"image {index} ({len(image)} bytes) cannot be decoded: {type(e).__name__}: {e}"
        ) from e


# --- registry and specs ----------------------------------------------------------------

EMBEDDERS: Registry[type[Embedder]] = Registry("embedder")


def register_embedder(name: str) -> Callable[[type[Embedder]], type[Embedder]]:
    """Class decorator: register an :class:`Embedder` subclass under ``name`` (duplicates raise)."""

    def deco(cls: type[Embedder]) -> type[Embedder]:
        EMBEDDERS.register(name)(cls)
        cls.name = name
        return cls

    return deco


def embedder_names() -> list[str]:
    return EMBEDDERS.names()


def parse_spec(spec: str | dict[str, Any]) -> tuple[type[Embedder], dict[str, Any]]:
    """``"name[:args]"`` or ``{"name": …, **kwargs}`` -> (class, constructor kwargs), validated."""
    if isinstance(spec, str):
        name, sep, args = spec.strip().partition(":")
        cls = EMBEDDERS.get(name)  # unknown names fail here, listing the valid ones
        return cls, cls.parse_args(args if sep else None)
    if not isinstance(spec, dict):
        raise EmbedderError(
            f"embedder spec must be a string like 'open_clip:ViT-B-32:openai' or a dict, got {spec!r}"
        )
    if "name" not in spec:
        raise EmbedderError(
            f"embedder spec {spec!r} has no 'name'; valid names: {', '.join(EMBEDDERS.names())}"
        )
    cls = EMBEDDERS.get(spec["name"])
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    _check_options(cls, kwargs)
    return cls, kwargs


def _check_options(cls: type[Embedder], kwargs: dict[str, Any]) -> None:
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self" and params[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise EmbedderError(
            f"embedder {cls.name!r} has no option(s) {unknown}; valid options: {', '.join(valid)}"
        )


def get_embedder(spec: str | dict[str, Any], **kwargs: Any) -> Embedder:
    """Build an embedder from a spec; ``kwargs`` (e.g. ``device="cpu"``) are added to the spec's options."""
    cls, spec_kwargs = parse_spec(spec)
    clash = sorted(set(spec_kwargs) & set(kwargs))
    if clash:
        raise EmbedderError(
            f"option(s) {clash} given both in the spec {spec!r} and as arguments; give them once"
        )
    _check_options(cls, kwargs)
    return cls(**spec_kwargs, **kwargs)
