"""Does a checkpoint fit a model, how many units has a layer: answered on the meta device, before a run.

A sweep spec names a model, its weights and the units it attacks. A checkpoint of another
architecture, random bytes, a pickle that would run code, or unit 999 of a 256-unit layer
must be refused by ``vizsweep validate``, not by a trial an hour into a sweep. The model is
built on the ``meta`` device (shapes only: no memory, no weights), and the checkpoint is
opened with ``torch.load(weights_only=True)`` through :func:`read_checkpoint`.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache

import torch

from shared.models.checkpoint import CheckpointError, read_checkpoint
from shared.models.zoo import model_info

SHOWN = 4  # keys named per kind of mismatch


@lru_cache(maxsize=32)
def _meta_shapes(name: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    info = model_info(name)
    with torch.device("meta"):
        model = info.builder(num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def layer_units(name: str, layer: str, num_classes: int | None = None) -> int | None:
    """Units (channels / features) of ``layer`` of model ``name``; None when the module does not say."""
    info = model_info(name)
    path = info.resolve_layer(layer)
    with torch.device("meta"):
        module = info.builder(num_classes or info.num_classes).get_submodule(path)
    for attr in ("out_channels", "out_features", "num_features"):
        n = getattr(module, attr, None)
        if isinstance(n, int):
            return n
    return _traced_units(name, path, num_classes or info.num_classes)


def _traced_units(name: str, path: str, num_classes: int) -> int | None:
    """The module's output channels from a meta-device forward pass (activations, pooling, blocks)."""
    info = model_info(name)
    out: list[int] = []
    with torch.device("meta"):
        model = info.builder(num_classes).eval()
        module = model.get_submodule(path)
        hook = module.register_forward_hook(lambda m, i, o: out.append(o.shape[1] if o.dim() > 1 else 0))
        try:
            crop = info.preprocess.crop
            model(torch.zeros(1, 3, crop, crop))
        except Exception:  # a model the meta device cannot run: the trial's own check reports it
            return None
        finally:
            hook.remove()
    return out[0] if out else None


def checkpoint_problem(name: str, uri: str) -> str | None:
    """Why the checkpoint at ``uri`` cannot be loaded into model ``name`` (None: it fits)."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore")
            ckpt = read_checkpoint(uri)
    except CheckpointError as e:
        return _load_failure(uri, e) if e.__cause__ is not None else str(e)
    except (OSError, RuntimeError, ValueError) as e:  # a store error reading the bytes
        return f"cannot read checkpoint {uri}: {type(e).__name__}: {e}"
    if ckpt["model"] is not None and ckpt["model"] != name:
        return f"checkpoint {uri} holds model {ckpt['model']!r}, not {name!r}"
    info = model_info(name)
    state = ckpt["state_dict"]
    n = ckpt["num_classes"]
    head = f"{info.head}.weight"
    if n is None:
        if head not in state or state[head].dim() != 2:
            return _mismatch(uri, name, state, _meta_shapes(name, info.num_classes), check_shapes=False)
        n = int(state[head].shape[0])
    pruned = bool(ckpt["meta"].get("index_map"))  # a structured-pruned variant: smaller shapes by design
    return _mismatch(uri, name, state, _meta_shapes(name, int(n)), check_shapes=not pruned)


def _load_failure(uri: str, e: CheckpointError) -> str:
    """torch's page-long weights_only error, cut to its reason (and without its advice to load unsafely)."""
    cause = e.__cause__
    text = str(cause)
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    reason = (m.group(1) if m else text.strip().splitlines()[0] if text.strip() else "").strip()
    reason = reason if len(reason) <= 160 else reason[:160] + "…"
    return (
        f"cannot load checkpoint {uri} safely (torch.load weights_only=True: {type(cause).__name__}: {reason}); "
        "it is not a weights file, or a pickle that could run code (refused); save it with "
        "shared.models.save_checkpoint or torch.save(model.state_dict(), f)"
    )


def _mismatch(
    uri: str, name: str, state: dict, want: dict[str, tuple[int, ...]], check_shapes: bool
) -> str | None:
    """Missing / unexpected keys and shape differences, a few of each by name."""
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {want[k]}"
        for k in want
        if check_shapes
        and k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != want[k]
    ]
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            more = f", … ({len(items)} in all)" if len(items) > SHOWN else ""
            parts.append(f"{label}: {', '.join(items[:SHOWN])}{more}")
    if not parts:
        return None
    return (
        f"checkpoint {uri} does not fit model {name!r} ({'; '.join(parts)}); "
        f"give a checkpoint of {name!r} (shared.models.save_checkpoint) or the model it was saved from"
    )
