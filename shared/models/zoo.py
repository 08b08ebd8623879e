"""The model registry: what to build, which layers have names, and how images must look.

Every model is a :class:`ModelInfo` record (torchvision's ``Weights`` idea, applied
to the whole model): builder, layer aliases (SCIENCE.md §1–§2), preprocessing,
default class count, classifier head and, for torchvision models, the weights enum.
:func:`build_model` turns a name plus weights (None, a torchvision weights name,
or a checkpoint path/URI) into a module; the class count follows from the weights
and a conflicting explicit ``num_classes`` is an error, as in torchvision.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from shared import store
from shared.datasets import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from shared.models.alexnet_mini import AlexNetMini
from shared.models.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from shared.models.layout import fast_layout
from shared.models.surgery import rebuild
from shared.models.vgg_mini import VGG_MINI_LAYERS, VGG_MINI_TARGET, VGGMini
from shared.registry import Registry, first_line

IMAGENET = Preprocess(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
MINI = Preprocess(resize=64, crop=56, mean=IMAGENET_MEAN, std=IMAGENET_STD)

# SCIENCE.md §1: conv1…conv5 are the ReLU outputs after AlexNet's convolutions, named
# explicitly instead of relying on the in-place ReLU overwriting the conv's output.
ALEXNET_LAYERS = {f"conv{i + 1}": f"features.{m}" for i, m in enumerate((1, 4, 7, 9, 11))}


TARGET_LAYER = "target_layer"  # layer name that resolves to ModelInfo.target_layer (SCIENCE.md §6)


class LayerError(ValueError):
    """A layer name is neither an alias nor a module path of the model."""


class WeightsError(RuntimeError):
    """Pretrained weights were asked for by name but cannot be had."""


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """Everything the jobs need to know about one registered model."""

    name: str
    builder: Callable[[int], nn.Module]  # num_classes -> randomly initialised module
    layers: Mapping[str, str]  # alias -> module path, e.g. "conv5" -> "features.11"
    preprocess: Preprocess  # resize / crop / mean / std the model expects
    num_classes: int  # default when neither weights nor the caller say otherwise
    head: str  # module path of the final Linear: its out_features is the class count
    # torchvision weights enum by name (e.g. "AlexNet_Weights"): torchvision is imported only when
    # it is needed, which saves ~2 s in every Ray actor that scores a small model.
    weights_enum_name: str | None = None
    notes: str = field(default="")  # why an alias points where it points, when not obvious
    description: str = field(default="")  # one line for `vizsweep list models`
    # Module path where saliency interpreters read their heatmap (SCIENCE.md §6: the last conv block);
    # also accepted as the layer name "target_layer". None: the model has no saliency target.
    target_layer: str | None = None
    pretrain_epochs: int = (
        16  # passes of the project's pretrain job (`weights: pretrain`) on the synthetic set
    )

    @property
    def weights_enum(self) -> Any:
        """The torchvision ``WeightsEnum`` class of this model, or None."""
        if self.weights_enum_name is None:
            return None
        import torchvision.models as tvm

        return getattr(tvm, self.weights_enum_name)

    def module_names(self) -> frozenset[str]:
        return _module_names(self.name)

    def resolve_layer(self, layer: str, model: nn.Module | None = None) -> str:
        """Module path for an alias or a raw module path; :class:`LayerError` lists the aliases otherwise."""
        if layer == TARGET_LAYER and self.target_layer is not None:
            return self.target_layer
        if layer in self.layers:
            return self.layers[layer]
        names = set(dict(model.named_modules())) if model is not None else self.module_names()
        if layer and layer in names:
            return layer
        raise LayerError(
            f"unknown layer {layer!r} for model {self.name!r}; valid aliases: {', '.join(self.layers)} "
            f"(or any module path of the model, e.g. {', '.join(sorted(names - {''})[:4])}, …)"
        )


MODELS: Registry[ModelInfo] = Registry("model")


def register_model(
    name: str,
    *,
    layers: Mapping[str, str],
    preprocess: Preprocess,
    num_classes: int,
    head: str,
    weights_enum: str | None = None,
    notes: str = "",
    description: str = "",
    target_layer: str | None = None,
    pretrain_epochs: int = 16,
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """Decorator: register ``builder(num_classes) -> nn.Module`` under ``name`` (duplicates raise).
    ``description`` (one line) defaults to the first line of the builder's docstring."""

    def deco(builder: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        info = ModelInfo(name, builder, dict(layers), preprocess, num_classes, head, weights_enum, notes,
                         description or first_line(builder.__doc__), target_layer, pretrain_epochs)  # fmt: skip
        MODELS.register(name)(info)
        return builder

    return deco


def model_info(name: str) -> ModelInfo:
    return MODELS.get(name)


def model_names() -> list[str]:
    return MODELS.names()


@functools.cache
def _module_names(name: str) -> frozenset[str]:
    # Built on the meta device: module paths without allocating or initialising weights.
    info = MODELS.get(name)
    with torch.device("meta"):
        model = info.builder(info.num_classes)
    return frozenset(dict(model.named_modules()))


# --- the models --------------------------------------------------------------------


@register_model("alexnet_mini", layers=ALEXNET_LAYERS, preprocess=MINI, num_classes=16, head="classifier.6")
def _alexnet_mini(num_classes: int) -> nn.Module:
    """AlexNet's layout shrunk for 56 px crops: the fast CPU stand-in for AlexNet (same module paths)."""
    return AlexNetMini(num_classes=num_classes)


@register_model(
    "alexnet",
    layers=ALEXNET_LAYERS,
    preprocess=IMAGENET,
    num_classes=1000,
    head="classifier.6",
    weights_enum="AlexNet_Weights",
)
def _alexnet(num_classes: int) -> nn.Module:
    """torchvision AlexNet at 224 px: the thesis's model (conv1…conv5 as in SCIENCE.md §1)."""
    import torchvision.models as tvm

    return tvm.alexnet(weights=None, num_classes=num_classes)


@register_model(
    "resnet50",
    layers={"layer4.2.conv2": "layer4.2.conv2"},
    preprocess=IMAGENET,
    num_classes=1000,
    head="fc",
    weights_enum="ResNet50_Weights",
    target_layer="layer4",
)
def _resnet50(num_classes: int) -> nn.Module:
    """torchvision ResNet-50 at 224 px."""
    import torchvision.models as tvm

    return tvm.resnet50(weights=None, num_classes=num_classes)


@register_model(
    "vgg_mini",
    layers=VGG_MINI_LAYERS,
    preprocess=MINI,
    num_classes=16,
    head="classifier.3",
    target_layer=VGG_MINI_TARGET,
    pretrain_epochs=4,  # 99.25 % val top-1 after 4 epochs on the synthetic set (tests/test_pretrain.py)
    notes="conv1..conv4 are the ReLU outputs (as for AlexNet); the saliency target is conv4's BN output.",
)
def _vgg_mini(num_classes: int) -> nn.Module:
    """A small VGG with BatchNorm for 56 px crops: the saliency family's demo model (14 x 14 target map)."""
    return VGGMini(num_classes=num_classes)


@register_model(
    "vgg19",
    layers={"features.34": "features.34"},
    preprocess=IMAGENET,
    num_classes=1000,
    head="classifier.6",
    weights_enum="VGG19_Weights",
    target_layer="features.34",
    notes="features.34 is the last conv (Heo et al.'s target layer); its in-place ReLU is features.35.",
)
def _vgg19(num_classes: int) -> nn.Module:
    """torchvision VGG-19 at 224 px (Heo et al.'s main model)."""
    import torchvision.models as tvm

    return tvm.vgg19(weights=None, num_classes=num_classes)


@register_model(
    "densenet121",
    layers={"features": "features"},
    preprocess=IMAGENET,
    num_classes=1000,
    head="classifier",
    weights_enum="DenseNet121_Weights",
    target_layer="features",
    notes="'features' ends with norm5 (BN); DenseNet's forward applies the ReLU after it.",
)
def _densenet121(num_classes: int) -> nn.Module:
    """torchvision DenseNet-121 at 224 px."""
    import torchvision.models as tvm

    return tvm.densenet121(weights=None, num_classes=num_classes)


@register_model(
    "efficientnet_b0",
    layers={"features.7": "features.7"},
    preprocess=IMAGENET,
    num_classes=1000,
    head="classifier.1",
    weights_enum="EfficientNet_B0_Weights",
    notes=(
        "SCIENCE.md names 'features.7 block 3', but torchvision's efficientnet_b0 features.7 holds a single "
        "MBConv (192->320, no residual), so its output equals that block's sub-module block.3 "
        "(features.7.0.block.3, the projection conv+BN); we expose the stage output as 'features.7'."
    ),
)
def _efficientnet_b0(num_classes: int) -> nn.Module:
    """torchvision EfficientNet-B0 at 224 px."""
    import torchvision.models as tvm

    return tvm.efficientnet_b0(weights=None, num_classes=num_classes)


@register_model(
    "vit_b_32",
    layers={f"encoder_layer_{i}": f"encoder.layers.encoder_layer_{i}" for i in (0, 6, 11)},
    preprocess=IMAGENET,
    num_classes=1000,
    head="heads.head",
    weights_enum="ViT_B_32_Weights",
)
def _vit_b_32(num_classes: int) -> nn.Module:
    """torchvision ViT-B/32 at 224 px."""
    import torchvision.models as tvm

    return tvm.vit_b_32(weights=None, num_classes=num_classes)


# --- building with weights ------------------------------------------------------------

_WEIGHTS_NAME = re.compile(r"^(\w+_Weights\.)?[A-Z][A-Z0-9_]*$")


def build_model(
    name: str, weights: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, dict]:
    """Build a registered model; returns ``(module, meta)`` with meta JSON-able.

    ``weights``: None (random init), a torchvision weights name ("DEFAULT",
    "IMAGENET1K_V1"), or a checkpoint as a local path, ``file://`` or ``s3://`` URI
    (our ``vizsweep-model-v1`` record or a bare state_dict).
    """
    info = model_info(name)
    if weights is None:
        n = info.num_classes if num_classes is None else num_classes
        return fast_layout(info.builder(n)), _meta(info, n, None, classes=None)
    if _WEIGHTS_NAME.match(weights) and not os.path.exists(weights):
        return _from_torchvision(info, weights, num_classes)
    return _from_checkpoint(info, read_checkpoint(weights), weights, num_classes)


def save_checkpoint(model: nn.Module, name: str, uri: str, meta: dict | None = None) -> str:
    """Write ``model`` as a ``vizsweep-model-v1`` record at ``uri``; returns the normalised URI."""
    info = model_info(name)
    num_classes = _head(info, model).out_features
    write_checkpoint(uri, name, num_classes, model.state_dict(), dict(meta or {}))
    return store.normalize(uri)


def load_checkpoint(uri: str, num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """Build the model a ``vizsweep-model-v1`` checkpoint names and load it; returns ``(module, meta)``."""
    ckpt = read_checkpoint(uri)
    if ckpt["model"] is None:
        raise CheckpointError(
            f"{uri} is a bare state_dict and does not say which model it is; use build_model(name, weights={uri!r})"
        )
    return _from_checkpoint(model_info(ckpt["model"]), ckpt, uri, num_classes)


def _from_torchvision(info: ModelInfo, weights: str, num_classes: int | None) -> tuple[nn.Module, dict]:
    if info.weights_enum is None:
        raise WeightsError(
            f"model {info.name!r} has no torchvision weights, so {weights!r} means nothing for it; "
            f"pass weights=None or a checkpoint path / file:// / s3:// URI"
        )
    enum = info.weights_enum
    try:
        w = enum.verify(weights)
    except KeyError:
        raise WeightsError(
            f"unknown weights {weights!r} for {info.name!r}; valid: {', '.join(enum.__members__)} "
            f"(or a checkpoint path / file:// / s3:// URI)"
        ) from None
    n = len(w.meta["categories"])
    _check_classes(num_classes, n, f"weights {w}")
    model = info.builder(n)
    try:
        state = w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, timeouts, hash mismatch: all mean "no usable file here"
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(w.url))
        raise WeightsError(
            f"cannot fetch torchvision weights {w} from {w.url} ({type(e).__name__}: {e}). Without internet, "
            f"stage the file: put it at {cached} (TORCH_HOME decides the folder), or upload it to the store "
            f"and pass weights='s3://…/{os.path.basename(w.url)}' or a local path instead"
        ) from e
    model.load_state_dict(state)
    return fast_layout(model), _meta(info, n, str(w), classes=list(w.meta["categories"]))


def _from_checkpoint(
    info: ModelInfo, ckpt: dict, uri: str, num_classes: int | None
) -> tuple[nn.Module, dict]:
    if ckpt["model"] is not None and ckpt["model"] != info.name:
        raise CheckpointError(
            f"checkpoint {uri} holds model {ckpt['model']!r}, not {info.name!r}; "
            f"build {ckpt['model']!r} or use shared.models.load_checkpoint({uri!r})"
        )
    state = ckpt["state_dict"]
    n = ckpt["num_classes"]
    if n is None:
        key = f"{info.head}.weight"
        if key not in state:
            raise CheckpointError(f"state_dict {uri} has no {key!r}: not a {info.name!r} checkpoint?")
        n = int(state[key].shape[0])
    _check_classes(num_classes, n, f"checkpoint {uri}")
    model = info.builder(n)
    index_map = ckpt["meta"].get("index_map")
    if index_map:  # a structured-pruned variant: rebuild its smaller shape, then load strictly
        rebuild(model, index_map, info.preprocess.crop)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {uri} does not fit model {info.name!r}: {e}") from e
    meta = dict(ckpt["meta"])
    return fast_layout(model), {**meta, **_meta(info, n, store.normalize(uri), classes=meta.get("classes"))}


def _check_classes(requested: int | None, found: int, source: str) -> None:
    if requested is not None and requested != found:
        raise ValueError(
            f"num_classes={requested} conflicts with {source}, which has {found} classes; "
            f"leave num_classes unset (it follows from the weights) or pass weights=None"
        )


def _head(info: ModelInfo, model: nn.Module) -> nn.Linear:
    head = model.get_submodule(info.head)
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"{info.name}.{info.head} is a {type(head).__name__}, expected nn.Linear (ModelInfo.head)"
        )
    return head


def _meta(info: ModelInfo, num_classes: int, weights: str | None, classes: list | None) -> dict[str, Any]:
    return {
        "model": info.name,
        "num_classes": num_classes,
        "weights": weights,
        "classes": classes,
        "preprocess": asdict(info.preprocess),
    }
