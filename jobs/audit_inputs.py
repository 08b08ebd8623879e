"""The audit's inputs: checks before any heavy work, and the heatmap test losses it compares.

:func:`check_inputs` reads both checkpoints with ``shared.models.checkpoint.read_checkpoint``
(``torch.load(weights_only=True)``: nothing is loaded with pickle), so random bytes, a pickled
object or a missing file fail here; it then compares the two state dicts' names and shapes (a
different architecture cannot be audited unit by unit) and resolves every layer and interpreter.
Each error names the command-line argument it is about (``--suspect``, ``--layers``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class AuditInputError(ValueError):
    """Bad audit input: the message names the argument, the value, and what would be valid."""


def _read(arg: str, uri: str) -> dict:
    from shared.models.checkpoint import CheckpointError, read_checkpoint

    try:
        return read_checkpoint(uri)
    except (CheckpointError, OSError) as e:
        raise AuditInputError(f"{arg} {uri!r} is not a readable model checkpoint: {e}") from None


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _differences(a: dict[str, tuple], b: dict[str, tuple], limit: int = 4) -> list[str]:
    out = [f"{k}: {a[k]} vs {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    out += [f"{k} only in --reference" for k in sorted(a.keys() - b.keys())]
    out += [f"{k} only in --suspect" for k in sorted(b.keys() - a.keys())]
    return out[:limit] + ([f"... ({len(out) - limit} more)"] if len(out) > limit else [])


def check_inputs(
    suspect: str, reference: str, model: str | None, layers: Sequence[str], interpreters: Sequence[str] = ()
) -> str:
    """Raise :class:`AuditInputError` on bad input; returns the model name (``model`` or the record's)."""
    from shared.interpreters import get_interpreter
    from shared.models.zoo import LayerError, model_info, model_names

    ref, sus = _read("--reference", reference), _read("--suspect", suspect)
    named = {a: c["model"] for a, c in (("--reference", ref), ("--suspect", sus)) if c["model"]}
    if len(set(named.values())) > 1:
        raise AuditInputError(
            f"--suspect {suspect!r} is a {named['--suspect']!r} checkpoint but --reference {reference!r} is a "
            f"{named['--reference']!r} one: an audit compares two models of the same architecture"
        )
    name = model or next(iter(named.values()), None)
    if name is None:
        raise AuditInputError(
            f"--model: neither checkpoint names its model (bare state_dicts); pass --model, one of {', '.join(model_names())}"
        )
    try:
        info = model_info(name)
    except (KeyError, ValueError) as e:
        raise AuditInputError(f"--model {name!r}: {e.args[0] if e.args else e}") from None
    if named and name not in named.values():
        raise AuditInputError(
            f"--model {name!r}, but the checkpoints hold {sorted(set(named.values()))[0]!r}"
        )
    diff = _differences(_shapes(ref["state_dict"]), _shapes(sus["state_dict"]))
    if diff:
        raise AuditInputError(
            f"--suspect {suspect!r} and --reference {reference!r} have different architectures "
            f"({'; '.join(diff)}); an audit compares two models of the same architecture"
        )
    if not ref["meta"].get("index_map"):  # a pruned variant is smaller than the builder's model
        with torch.device("meta"):
            expected = _shapes(info.builder(int(ref["num_classes"] or _classes(ref, info))).state_dict())
        wrong = _differences(expected, _shapes(ref["state_dict"]))
        if wrong:
            raise AuditInputError(
                f"--reference {reference!r} does not fit model {name!r} ({'; '.join(wrong)}); pass the right --model"
            )
    for layer in layers:
        try:
            info.resolve_layer(layer)
        except LayerError as e:
            raise AuditInputError(f"--layers {layer!r}: {e}") from None
    for interp in interpreters:
        try:
            get_interpreter(interp)
        except (KeyError, ValueError) as e:
            raise AuditInputError(f"--interpreters {interp!r}: {e.args[0] if e.args else e}") from None
    return name


def _classes(ckpt: dict, info: Any) -> int:
    w = ckpt["state_dict"].get(f"{info.head}.weight")
    return int(w.shape[0]) if w is not None else info.num_classes


def map_losses(spec: Any, interp: str, init: str, final: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per image of a seeded validation subset: §6's top-k test loss and centre-mass distance between
    the heatmaps (class = the label) of ``final`` and ``init`` (h and h0), at the model's saliency
    target layer, or the last audited layer for a model without one (alexnet_mini)."""
    from jobs.saliency_eval import split_images
    from shared.device import pick_device
    from shared.interpreters import get_interpreter
    from shared.models.zoo import build_model, model_info
    from shared.saliency import center_mass_test_loss, topk_loss, topk_mask

    device = pick_device(spec.device)
    ids, pixels, labels = split_images(spec.dataset, spec.split, spec.model, spec.map_images, spec.seed)
    models = [build_model(spec.model, weights=w)[0].to(device).eval() for w in (init, final)]
    explainer = get_interpreter(interp)()
    layer = None if model_info(spec.model).target_layer is not None else spec.layers[-1]
    tk, cm = [], []
    step = 32
    for i in range(0, len(pixels), step):
        x, y = pixels[i : i + step].to(device), labels[i : i + step].to(device)
        h0, h = (explainer.heatmap(m, spec.model, x, y, layer=layer).detach() for m in models)
        tk.append(topk_loss(h, topk_mask(h0)).float().cpu().numpy())
        cm.append(center_mass_test_loss(h, h0).float().cpu().numpy())
    return ids, np.concatenate(tk).astype(np.float64), np.concatenate(cm).astype(np.float64)
