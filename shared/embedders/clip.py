"""open_clip image towers as ``e(x)`` (SCIENCE.md §3 default: ViT-B-32 with OpenAI weights).

Weights come from a pretrained tag (downloaded by open_clip from the Hugging Face
hub, so only where the internet is reachable, or found in a cache staged
beforehand), a local checkpoint file, or an ``s3://`` URI copied to the local
cache once. Files load with ``weights_only=True``: no pickled code runs.

A tag fixes the activation the weights were trained with: OpenAI's ViT-B-32 uses
QuickGELU, and open_clip builds plain "ViT-B-32" with nn.GELU and only warns. We
follow the tag, and refuse an explicit ``quick_gelu`` that contradicts it
(STYLE.md: a setting that follows from the weights is not silently overridden).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from PIL import Image

from shared import store
from shared.embedders.base import Embedder, EmbedderError, register_embedder

_SCHEMAS = ("hf-hub", "local-dir")  # open_clip model names that carry their own weights


@register_embedder("open_clip")
class OpenClipEmbedder(Embedder):
    """The image tower of an open_clip model; the embedding is ``encode_image`` (before normalisation)."""

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        cache_dir: str | None = None,
        quick_gelu: bool | None = None,
        device: str = "auto",
    ) -> None:
        """``pretrained``: a tag of ``model_name`` ("openai", "laion2b_s34b_b79k"), a local path, a
        ``file://`` or ``s3://`` URI. Ignored for ``hf-hub:``/``local-dir:`` model names, which carry
        their own weights. ``quick_gelu``: None follows the tag (or the model config, for files).
        """
        import open_clip

        super().__init__(device)
        self.model_name = model_name
        self.cache_dir = cache_dir
        schema = model_name.split(":", 1)[0] if ":" in model_name else None
        if schema in _SCHEMAS:
            self.pretrained, path, force_qg = None, None, False
        else:
            self.pretrained, path, force_qg = _resolve_weights(model_name, pretrained, quick_gelu)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=path or self.pretrained,
                cache_dir=cache_dir,
                force_quick_gelu=force_qg,
                weights_only=True,  # files are data: refuse pickled code (OpenAI's TorchScript .pt included)
                device=self.device,
            )
        except Exception as e:
            # Network errors, missing files, shape mismatches: all mean "no usable weights here".
            if schema in _SCHEMAS:
                raise EmbedderError(
                    f"cannot build open_clip model {model_name!r}: {type(e).__name__}: {e}"
                ) from e
            raise EmbedderError(_weights_help(model_name, pretrained, path, cache_dir, e)) from e
        self.model = model.eval()
        self._transform = preprocess
        # None for hf-hub:/local-dir: names: their config says, and reading it again could mean a download.
        self.quick_gelu = (
            None
            if schema in _SCHEMAS
            else bool(force_qg or (open_clip.get_model_config(model_name) or {}).get("quick_gelu", False))
        )
        self.image_size = getattr(model.visual, "image_size", None)
        dim = getattr(model.visual, "output_dim", None)
        self.dim = int(dim) if dim else int(self._probe_dim())

    def _probe_dim(self) -> int:
        size = self.image_size if isinstance(self.image_size, tuple | list) else (self.image_size or 224,) * 2
        with torch.inference_mode():
            return self._forward(torch.zeros(1, 3, *size, device=self.device)).shape[1]

    def _preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._transform(image)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)

    def describe(self) -> dict[str, Any]:
        spec = f"open_clip:{self.model_name}" + (f":{self.pretrained}" if self.pretrained else "")
        size = self.image_size
        return {
            "kind": "open_clip",
            # hf-hub:/local-dir: names have a colon of their own: they round-trip as a dict spec
            "spec": spec if self.pretrained else {"name": "open_clip", "model_name": self.model_name},
            "model": self.model_name,
            "pretrained": self.pretrained,
            "quick_gelu": self.quick_gelu,
            "image_size": list(size) if isinstance(size, tuple | list) else size,
            "dim": self.dim,
        }

    @classmethod
    def parse_args(cls, args: str | None) -> dict[str, Any]:
        """``<model>[:<pretrained>]``; the pretrained part may itself contain colons (``s3://…``)."""
        if args is None:
            return {}  # plain "open_clip": the SCIENCE.md default, ViT-B-32 with OpenAI weights
        model, sep, pretrained = args.partition(":")
        if not model:
            raise EmbedderError(
                f"open_clip spec 'open_clip:{args}' has no model name; write open_clip:<model>[:<pretrained>], "
                f"e.g. open_clip:ViT-B-32:openai"
            )
        if model in _SCHEMAS:
            raise EmbedderError(
                f"open_clip model {model}:{pretrained} cannot be written in a spec string (its name has a colon); "
                f"use a dict spec: {{'name': 'open_clip', 'model_name': '{model}:{pretrained}'}}"
            )
        if sep and not pretrained:
            raise EmbedderError(
                f"open_clip spec 'open_clip:{args}' ends with ':' but names no weights; write a tag "
                f"(open_clip:{model}:openai), a path or an s3:// URI, or drop the trailing ':'"
            )
        return {"model_name": model, **({"pretrained": pretrained} if sep else {})}


def _resolve_weights(
    model_name: str, pretrained: str | None, quick_gelu: bool | None
) -> tuple[str, str | None, bool]:
    """(what to record: tag or normalised URI, local file to load or None for a tag, force QuickGELU)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    model_name = model_name.replace("/", "-")  # open_clip's own spelling of names like "ViT-B/32"
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise EmbedderError(
            f"unknown open_clip model {model_name!r}; valid: {', '.join(open_clip.list_models())} "
            f"(or register a config with open_clip.add_model_config)"
        )
    if not pretrained:
        raise EmbedderError(
            f"open_clip model {model_name!r} needs weights (pretrained=None would embed with random weights); "
            f"pass a tag ({', '.join(open_clip.list_pretrained_tags_by_model(model_name)) or 'none known'}), "
            f"a checkpoint path or an s3:// URI"
        )
    config_qg = bool(cfg.get("quick_gelu", False))
    tag_cfg = get_pretrained_cfg(model_name, pretrained) if "/" not in pretrained else {}
    if tag_cfg:
        needed = bool(tag_cfg.get("quick_gelu", False))
        if quick_gelu is not None and quick_gelu != needed:
            raise EmbedderError(
                f"quick_gelu={quick_gelu} contradicts the weights {model_name}:{pretrained}, trained with "
                f"quick_gelu={needed}; leave quick_gelu unset"
            )
        return pretrained, None, needed and not config_qg
    if quick_gelu is False and config_qg:
        raise EmbedderError(
            f"quick_gelu=False contradicts model config {model_name!r} (QuickGELU); pick the config without "
            f"'-quickgelu' instead"
        )
    uri = store.normalize(pretrained)
    if (
        store.is_s3(uri)
        or pretrained.startswith("file://")
        or os.sep in pretrained
        or os.path.exists(pretrained)
    ):
        from shared.models.checkpoint import CheckpointError, local_copy

        try:
            path = local_copy(uri)  # S3 objects are cached by (uri, size, mtime)
        except CheckpointError as e:
            raise EmbedderError(f"open_clip weights for {model_name!r} not found: {e}") from e
        return uri, path, bool(quick_gelu) and not config_qg
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise EmbedderError(
        f"pretrained={pretrained!r} is neither a tag of open_clip model {model_name!r} "
        f"(valid: {', '.join(tags) or 'none'}) nor an existing file; pass a tag, a path, file:// or s3:// URI"
    )


def _weights_help(
    model_name: str, pretrained: str | None, path: str | None, cache_dir: str | None, e: Exception
) -> str:
    what = f"open_clip {model_name} with weights {pretrained!r}"
    cause = f"{type(e).__name__}: {e}"
    if path is not None:
        return (
            f"cannot load {what} from {path} ({cause}). The file must be a state_dict of this model loadable with "
            f"torch.load(weights_only=True) or a .safetensors file (OpenAI's original TorchScript ViT-B-32.pt is "
            f"not; use open_clip_pytorch_model.bin from https://huggingface.co/timm/vit_base_patch32_clip_224.openai "
            f"with model 'ViT-B-32-quickgelu' or quick_gelu=True)"
        )
    from open_clip.pretrained import get_pretrained_cfg

    tag = get_pretrained_cfg(model_name, pretrained or "")
    hub = tag.get("hf_hub", "").rstrip("/")
    qg = " (with quick_gelu=True: these weights use QuickGELU)" if tag.get("quick_gelu") else ""
    where = (
        cache_dir
        or os.environ.get("HF_HUB_CACHE")
        or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    )
    return (
        f"cannot get {what} ({cause}). Tags are downloaded from the Hugging Face hub ({hub or 'see open_clip'}), "
        f"which needs the internet, or found in a staged cache (looked in {where}). To stage the weights: "
        f"(1) on a machine with internet run open_clip.create_model({model_name!r}, pretrained={pretrained!r}, "
        f"cache_dir=DIR), copy DIR here and pass cache_dir=DIR (or set HF_HUB_CACHE=DIR, HF_HUB_OFFLINE=1); or "
        f"(2) pass the downloaded file itself, pretrained='/path/to/open_clip_pytorch_model.bin', or an "
        f"s3://… URI after uploading it to the store{qg}. Offline, the 'reference' embedder needs no download"
    )
