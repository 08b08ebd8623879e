"""Image embedders ``e(x)`` for the CLIP metrics (SCIENCE.md §3): open_clip and the offline reference."""

from shared.embedders.base import (
    EMBEDDERS,
    Embedder,
    EmbedderError,
    embedder_names,
    get_embedder,
    parse_spec,
    register_embedder,
)
from shared.embedders.clip import OpenClipEmbedder
from shared.embedders.reference import ReferenceEmbedder

DEFAULT_EMBEDDER = "open_clip:ViT-B-32:openai"  # SCIENCE.md §3

__all__ = [
    "DEFAULT_EMBEDDER",
    "EMBEDDERS",
    "Embedder",
    "EmbedderError",
    "OpenClipEmbedder",
    "ReferenceEmbedder",
    "embedder_names",
    "get_embedder",
    "parse_spec",
    "register_embedder",
]
