"""Model zoo: registry, builders with weights, checkpoints (see zoo.py)."""

from shared.models import refnet  # noqa: F401  (registers resnet_mini, the reference encoder)
from shared.models.checkpoint import FORMAT, CheckpointError, read_checkpoint
from shared.models.zoo import (
    MODELS,
    LayerError,
    ModelInfo,
    WeightsError,
    build_model,
    load_checkpoint,
    model_info,
    model_names,
    register_model,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "MODELS",
    "CheckpointError",
    "LayerError",
    "ModelInfo",
    "WeightsError",
    "build_model",
    "load_checkpoint",
    "model_info",
    "model_names",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
]
