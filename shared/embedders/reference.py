"""The offline reference encoder: penultimate features of a model trained on our own data.

Where no CLIP weights can be had, ``e(x)`` of SCIENCE.md §3 is a classifier the
project trains itself (jobs/reference_encoder.py: ``resnet_mini``, another
architecture and seed than the attacked ``alexnet_mini``). The embedding is the
input of the model's registered head (``ModelInfo.head``): the last
representation before class scores, which places same-class images together
without being the class scores themselves. Any zoo checkpoint works, so the
reference can be swapped without code changes.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import nn

from shared import store
from shared.datasets import preprocess_image
from shared.embedders.base import Embedder, EmbedderError, register_embedder


@register_embedder("reference")
class ReferenceEmbedder(Embedder):
    """L2-normalised penultimate features of a ``vizsweep-model-v1`` checkpoint."""

    def __init__(self, checkpoint_uri: str, device: str = "auto") -> None:
        from shared.models import CheckpointError, load_checkpoint, model_info

        super().__init__(device)
        try:
            model, meta = load_checkpoint(checkpoint_uri)
        except (CheckpointError, FileNotFoundError) as e:
            raise EmbedderError(
                f"reference embedder cannot load {checkpoint_uri}: {e}. It needs a checkpoint written by "
                f"shared.models.save_checkpoint, e.g. from jobs.reference_encoder.train_reference_encoder"
            ) from e
        info = model_info(meta["model"])
        head = model.get_submodule(info.head)
        # Replacing the head by Identity makes forward() return the head's input: no hook to keep alive.
        model.set_submodule(info.head, nn.Identity())
        self.dim = int(head.in_features)
        self.model = model.eval().to(self.device)
        self.checkpoint_uri = store.normalize(checkpoint_uri)
        self._meta = meta
        self._info = info
        # shared.datasets.preprocess_image: the arithmetic of shared.datasets.decode_image (shorter side ->
        # resize, bilinear, centre crop), i.e. what the model saw in training and in the activation jobs.
        self._pre = info.preprocess

    def _preprocess(self, image: Image.Image) -> torch.Tensor:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return torch.from_numpy(preprocess_image(rgb, self._pre))

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model(batch), 1)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "reference",
            "spec": f"reference:{self.checkpoint_uri}",
            "model": self._info.name,
            "checkpoint": self.checkpoint_uri,
            "layer": f"input of {self._info.head}",
            "dim": self.dim,
            "val_acc": self._meta.get("val_acc"),  # accuracy of the classifier the features come from
            "key": self._meta.get("key"),  # content key of the pretraining run, when it came from one
        }

    @classmethod
    def parse_args(cls, args: str | None) -> dict[str, Any]:
        """``reference:<checkpoint URI>``; the URI keeps its own colons (``s3://…``)."""
        if not args:
            raise EmbedderError(
                "reference spec needs a checkpoint: reference:<path | file:// | s3:// URI>; train one with "
                "jobs.reference_encoder.train_reference_encoder"
            )
        return {"checkpoint_uri": args}
