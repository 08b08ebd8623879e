"""Saliency interpreters of SCIENCE.md §6, found by name: ``get_interpreter("gradcam")().heatmap(...)``."""

from shared.interpreters import gradcam, lrp, simplegrad  # noqa: F401  (register the plugins)
from shared.interpreters.base import (
    INTERPRETERS,
    Explanation,
    Interpreter,
    get_interpreter,
    interpreter_names,
    max_normalise,
    minmax_normalise,
    register_interpreter,
    upsample,
)
from shared.interpreters.lrp import LRPUnsupportedError

__all__ = [
    "INTERPRETERS",
    "Explanation",
    "Interpreter",
    "LRPUnsupportedError",
    "get_interpreter",
    "interpreter_names",
    "max_normalise",
    "minmax_normalise",
    "register_interpreter",
    "upsample",
]
