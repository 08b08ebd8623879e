"""Model zoo, unit-score hooks and checkpoints (SCIENCE.md §1)."""

from __future__ import annotations

import functools
import os
import urllib.error

import pytest
import torch
from torch import nn

from shared.hooks import UnitScores, unit_count, unit_scores
from shared.models import (
    CheckpointError,
    LayerError,
    WeightsError,
    build_model,
    load_checkpoint,
    model_info,
    model_names,
    register_model,
    save_checkpoint,
)
from shared.registry import RegistryError


def _sq(t: torch.Tensor) -> torch.Tensor:
    """Reference unit score: squared values summed over everything but batch and unit."""
    if t.dim() == 4:
        return (t**2).sum(dim=(2, 3))
    if t.dim() == 3:
        return (t**2).sum(dim=1)
    return t**2


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@functools.cache
def _frozen(name: str) -> nn.Module:
    """One random eval-mode model per name for the read-only tests (building ResNet/ViT takes seconds)."""
    torch.manual_seed(0)
    return build_model(name, num_classes=10)[0].eval()


def _small_side(name: str) -> int:
    """Smallest convenient input: 64 px for the convnets, the fixed 224 for ViT."""
    return 224 if name.startswith("vit") else min(64, model_info(name).preprocess.crop)


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --- registry ----------------------------------------------------------------------


def test_registry_has_the_science_models():
    assert {"alexnet", "alexnet_mini", "resnet50", "efficientnet_b0", "vit_b_32"} <= set(model_names())
    assert model_info("alexnet").layers == {
        f"conv{i}": f"features.{m}" for i, m in zip(range(1, 6), (1, 4, 7, 9, 11))
    }
    assert model_info("alexnet_mini").layers == model_info("alexnet").layers
    assert model_info("resnet50").layers == {"layer4.2.conv2": "layer4.2.conv2"}
    assert model_info("efficientnet_b0").layers == {"features.7": "features.7"}
    assert set(model_info("vit_b_32").layers) == {"encoder_layer_0", "encoder_layer_6", "encoder_layer_11"}


def test_duplicate_and_unknown_names():
    with pytest.raises(RegistryError, match="already registered"):
        register_model(
            "alexnet_mini",
            layers={},
            preprocess=model_info("alexnet_mini").preprocess,
            num_classes=2,
            head="x",
        )(lambda n: nn.Linear(1, n))
    with pytest.raises(RegistryError, match="alexnet_mini") as e:
        model_info("alexnet_tiny")
    assert "resnet50" in str(e.value) and "vit_b_32" in str(e.value)


def test_wrong_layer_lists_valid_aliases():
    with pytest.raises(LayerError, match="conv1, conv2, conv3, conv4, conv5") as e:
        model_info("alexnet_mini").resolve_layer("conv6")
    assert isinstance(e.value, ValueError) and "'conv6'" in str(e.value)
    model, _ = build_model("alexnet_mini")
    with pytest.raises(LayerError, match="conv1"):
        UnitScores(model, "alexnet_mini", ["conv1", "fc7"])
    assert model_info("alexnet_mini").resolve_layer("features.10") == "features.10"  # raw paths are accepted


@pytest.mark.parametrize("name", model_names())
def test_every_model_builds_runs_and_scores(name):
    """Smoke test over the whole registry: a newly registered model is covered automatically."""
    info = model_info(name)
    torch.manual_seed(0)
    model, meta = build_model(name, num_classes=5)
    assert meta["num_classes"] == 5 and meta["weights"] is None and meta["model"] == name
    model.eval()
    side = _small_side(name)
    x = torch.randn(1, 3, side, side)
    layers = list(info.layers)
    with torch.no_grad(), UnitScores(model, name, layers) as rec:
        logits = model(x)
    assert logits.shape == (1, 5)
    for layer in layers:
        s = rec.scores[layer]
        assert s.dtype == torch.float32 and s.shape == (1, unit_count(name, layer))
        assert torch.isfinite(s).all() and (s >= 0).all()
    assert _no_hooks(model)


# --- hooks against a hand-run forward ------------------------------------------------------


def test_alexnet_mini_scores_match_manual_forward():
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    model.eval()
    x = torch.randn(3, 3, 56, 56)
    info = model_info("alexnet_mini")
    with torch.no_grad(), UnitScores(model, "alexnet_mini", [*info.layers, "classifier.4"]) as rec:
        model(x)
        for alias, path in info.layers.items():
            k = int(path.split(".")[1])
            _close(rec.scores[alias], _sq(model.features[: k + 1](x.clone())))
        flat = torch.flatten(model.avgpool(model.features(x.clone())), 1)
        _close(rec.scores["classifier.4"], _sq(model.classifier[:5](flat)))  # linear unit: squared scalar
    assert rec.scores["conv5"].shape == (3, 64)


def test_clone_protects_against_in_place_relu():
    """features.0 (the conv) is overwritten by the in-place ReLU after it; the hook must see the conv output."""
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    model.eval()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad(), UnitScores(model, "alexnet_mini", ["features.0", "conv1"]) as rec:
        model(x)
        conv = model.features[0](x)
    _close(rec.scores["features.0"], _sq(conv))
    _close(rec.scores["conv1"], _sq(conv.clamp(min=0)))
    assert not torch.allclose(rec.scores["features.0"], rec.scores["conv1"])


def test_resnet50_scores_match_manual_forward():
    model = _frozen("resnet50")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), UnitScores(model, "resnet50", ["layer4.2.conv2"]) as rec:
        model(x)
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer4[:2](model.layer3(model.layer2(model.layer1(h))))
        b = model.layer4[2]
        ref = b.conv2(b.relu(b.bn1(b.conv1(h))))
    _close(rec.scores["layer4.2.conv2"], _sq(ref))
    assert rec.scores["layer4.2.conv2"].shape == (2, 512)


def test_efficientnet_b0_scores_match_manual_forward():
    model = _frozen("efficientnet_b0")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), UnitScores(model, "efficientnet_b0", ["features.7", "features.7.0.block.3"]) as rec:
        model(x)
        ref = model.features[:8](x)
    _close(rec.scores["features.7"], _sq(ref))
    # features.7 is one MBConv without a residual: its output is that block's projection (block.3)
    _close(rec.scores["features.7.0.block.3"], rec.scores["features.7"])
    assert rec.scores["features.7"].shape == (2, 320)


def test_vit_b_32_scores_sum_over_all_tokens():
    model = _frozen("vit_b_32")
    x = torch.randn(1, 3, 224, 224)
    aliases = ["encoder_layer_0", "encoder_layer_6", "encoder_layer_11"]
    with torch.no_grad(), UnitScores(model, "vit_b_32", aliases) as rec:
        model(x)
        h = model._process_input(x)
        h = torch.cat([model.class_token.expand(h.shape[0], -1, -1), h], dim=1)  # CLS included
        h = model.encoder.dropout(h + model.encoder.pos_embedding)
        refs = {}
        for i, layer in enumerate(model.encoder.layers):
            h = layer(h)
            refs[f"encoder_layer_{i}"] = _sq(h)
    for alias in aliases:
        _close(rec.scores[alias], refs[alias])
        assert rec.scores[alias].shape == (1, 768)


# --- hook lifecycle and autograd ----------------------------------------------------------


def test_hooks_removed_on_exit_and_on_error():
    model, _ = build_model("alexnet_mini")
    with UnitScores(model, "alexnet_mini", ["conv1", "conv5"]):
        assert not _no_hooks(model)
    assert _no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), UnitScores(model, "alexnet_mini", ["conv2"]):
        raise RuntimeError("boom")
    assert _no_hooks(model)
    with pytest.raises(RuntimeError), UnitScores(model, "alexnet_mini", ["conv2"]):
        model(torch.randn(1, 3, 7, 7))  # too small: the forward itself fails
    assert _no_hooks(model)


def test_detach_false_keeps_the_graph():
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    x = torch.randn(2, 3, 56, 56)
    with UnitScores(model, "alexnet_mini", ["conv3"], detach=False) as rec:
        model(x)
    rec.scores["conv3"].mean().backward()
    assert model.features[6].weight.grad is not None and model.features[6].weight.grad.abs().sum() > 0
    assert model.classifier[6].weight.grad is None  # the score does not depend on the head
    with UnitScores(model, "alexnet_mini", ["conv3"]) as rec:
        model(x)
    assert not rec.scores["conv3"].requires_grad


def test_scores_follow_the_latest_forward_and_stop_early():
    model, _ = build_model("alexnet_mini")
    model.eval()
    x1, x2 = torch.randn(2, 3, 56, 56), torch.randn(4, 3, 56, 56)
    with torch.no_grad(), UnitScores(model, "alexnet_mini", ["conv2"]) as rec:
        model(x1)
        model(x2)
        assert rec.scores["conv2"].shape == (4, 96)
        assert rec.run(x1, stop_early=True) is None
        assert rec.scores["conv2"].shape == (2, 96)
        assert rec.run(x1).shape == (2, 16)


def test_shared_module_is_rejected():
    model = _frozen("resnet50")
    with torch.no_grad(), UnitScores(model, "resnet50", ["layer4.2.relu"]) as rec:
        with pytest.raises(LayerError, match="ran twice"):
            model(torch.randn(1, 3, 64, 64))
    assert rec is not None and _no_hooks(model)


def test_unit_scores_shapes_and_bf16():
    assert unit_scores(torch.ones(2, 3, 4, 5)).tolist() == [[20.0] * 3] * 2
    assert unit_scores(torch.ones(2, 7, 4)).tolist() == [[7.0] * 4] * 2
    assert unit_scores(torch.full((2, 3), 3.0)).tolist() == [[9.0] * 3] * 2
    assert unit_scores(torch.ones(2, 3, 4, dtype=torch.bfloat16)).dtype == torch.float32
    with pytest.raises(LayerError, match="shape"):
        unit_scores(torch.ones(5))


def test_unit_count_follows_a_given_model():
    assert unit_count("alexnet_mini", "conv5") == 64
    assert unit_count("alexnet", "conv5") == 256
    model, _ = build_model("alexnet_mini")
    model.features[10] = nn.Conv2d(128, 40, 3, padding=1)  # as a structurally pruned conv5 would be
    assert unit_count("alexnet_mini", "conv5", model) == 40
    assert model.training  # probing does not change the mode


# --- checkpoints and weights ----------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini", num_classes=7)
    uri = save_checkpoint(
        model, "alexnet_mini", f"file://{tmp_path}/m/model.pt", {"classes": list("abcdefg"), "val_acc": 0.5}
    )
    raw = torch.load(tmp_path / "m" / "model.pt", map_location="cpu", weights_only=True)  # safe format
    assert raw["format"] == "vizsweep-model-v1" and raw["num_classes"] == 7 and raw["model"] == "alexnet_mini"
    loaded, meta = load_checkpoint(uri)
    assert meta["num_classes"] == 7 and meta["classes"] == list("abcdefg") and meta["val_acc"] == 0.5
    assert meta["weights"] == uri
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    same, _ = build_model("alexnet_mini", weights=str(tmp_path / "m" / "model.pt"))
    model.eval(), same.eval()
    x = torch.randn(2, 3, 56, 56)
    torch.testing.assert_close(model(x), same(x))


def test_checkpoint_errors(tmp_path):
    model, _ = build_model("alexnet_mini", num_classes=7)
    path = str(tmp_path / "model.pt")
    save_checkpoint(model, "alexnet_mini", path)
    with pytest.raises(ValueError, match="num_classes=10 conflicts .* 7 classes"):
        build_model("alexnet_mini", weights=path, num_classes=10)
    build_model("alexnet_mini", weights=path, num_classes=7)  # agreeing is fine
    with pytest.raises(CheckpointError, match="holds model 'alexnet_mini'"):
        build_model("alexnet", weights=path)
    with pytest.raises(CheckpointError, match="JSON-able"):
        save_checkpoint(model, "alexnet_mini", path, {"when": object()})
    with pytest.raises(CheckpointError, match="not found"):
        build_model("alexnet_mini", weights=str(tmp_path / "missing.pt"))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "vizsweep-model-v1", "model": "alexnet_mini", "hook": _Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(str(path))


class _Evil:
    """Any non-tensor object: torch.load(weights_only=True) refuses to unpickle it."""


def test_bare_state_dict_takes_num_classes_from_the_head(tmp_path):
    model, _ = build_model("alexnet_mini", num_classes=3)
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    loaded, meta = build_model("alexnet_mini", weights=f"file://{path}")
    assert meta["num_classes"] == 3 and loaded.classifier[6].out_features == 3
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(str(path))


def _stage_torchvision_file(torch_home, name: str, weights_name: str) -> nn.Module:
    """Put a (random) state_dict where torch.hub looks for the weights' URL: $TORCH_HOME/hub/checkpoints/<basename>."""
    enum = model_info(name).weights_enum
    w = enum.verify(weights_name)
    model = model_info(name).builder(len(w.meta["categories"]))
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / os.path.basename(w.url))
    return model


def test_torchvision_weights_name_loads_staged_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = _stage_torchvision_file(tmp_path, "efficientnet_b0", "IMAGENET1K_V1")
    for name in ("IMAGENET1K_V1", "DEFAULT", "EfficientNet_B0_Weights.IMAGENET1K_V1"):
        model, meta = build_model("efficientnet_b0", weights=name)
        assert meta["num_classes"] == 1000 and len(meta["classes"]) == 1000
        assert meta["weights"] == "EfficientNet_B0_Weights.IMAGENET1K_V1"
        assert torch.equal(model.features[0][0].weight, ref.features[0][0].weight)
    with pytest.raises(ValueError, match="num_classes=16 conflicts"):
        build_model("efficientnet_b0", weights="DEFAULT", num_classes=16)


def test_torchvision_weights_unavailable_says_how_to_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="stage the file") as e:
        build_model("efficientnet_b0", weights="IMAGENET1K_V1")
    assert str(tmp_path / "hub" / "checkpoints") in str(e.value)
    with pytest.raises(WeightsError, match="valid: IMAGENET1K_V1, DEFAULT"):
        build_model("efficientnet_b0", weights="IMAGENET1K_V9")
    with pytest.raises(WeightsError, match="no torchvision weights"):
        build_model("alexnet_mini", weights="DEFAULT")


@pytest.mark.slow
def test_checkpoint_via_s3(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("VIZSWEEP_CACHE", str(tmp_path / "cache"))
    model, _ = build_model("alexnet_mini", num_classes=4)
    uri = save_checkpoint(
        model, "alexnet_mini", f"s3://{s3_server.bucket}/models/k/model.pt", {"classes": list("abcd")}
    )
    loaded, meta = load_checkpoint(uri)
    assert meta["classes"] == list("abcd") and meta["weights"] == uri
    assert torch.equal(loaded.features[0].weight, model.features[0].weight)
    assert any(p.name == "model.pt" for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.slow
def test_torchvision_state_dict_staged_in_s3_loads_without_network(s3_server, tmp_path, monkeypatch):
    """How a cluster stages torchvision weights offline: the .pth (a bare state_dict, as torchvision
    ships it) copied to S3 and named by its s3:// URI as the model's weights."""
    import io

    monkeypatch.setenv("VIZSWEEP_CACHE", str(tmp_path / "cache"))
    from shared import store

    original = model_info("efficientnet_b0").builder(1000)
    buf = io.BytesIO()
    torch.save(original.state_dict(), buf)
    uri = f"s3://{s3_server.bucket}/weights/efficientnet_b0_rwightman-7f5810bc.pth"
    store.write_bytes(uri, buf.getvalue())
    loaded, meta = build_model("efficientnet_b0", weights=uri)
    assert meta["num_classes"] == 1000
    for (k, a), b in zip(original.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
