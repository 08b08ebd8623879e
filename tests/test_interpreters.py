"""Saliency interpreters (SCIENCE.md §6): forward values against captum, gradients to the weights, registry."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shared.interpreters import (
    INTERPRETERS,
    Interpreter,
    LRPUnsupportedError,
    get_interpreter,
    interpreter_names,
    max_normalise,
    minmax_normalise,
    register_interpreter,
    upsample,
)
from shared.models import build_model, model_info
from shared.models.vgg_mini import VGGMini
from shared.models.zoo import LayerError
from shared.registry import RegistryError
from shared.saliency import location_loss

captum_attr = pytest.importorskip("captum.attr")


def _vgg_mini(dtype=torch.float64, seed: int = 0, **kw) -> nn.Module:
    """A random vgg_mini in eval mode with non-trivial BatchNorm statistics (so BN is not the identity)."""
    torch.manual_seed(seed)
    model = VGGMini(**kw) if kw else build_model("vgg_mini", num_classes=5)[0]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    return model.to(dtype).eval()


def _no_inplace(model: nn.Module) -> nn.Module:
    """captum's LRP puts backward hooks on ReLUs, which in-place ReLUs break: a copy with out-of-place ones."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return twin


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


X_SHAPE = (3, 3, 56, 56)
TARGET = torch.tensor([0, 3, 1])


# --- forward values against captum --------------------------------------------------------


@pytest.mark.parametrize("layer", ["features.11", "features.4"])
def test_gradcam_matches_captum(layer):
    model = _vgg_mini()
    x = torch.randn(*X_SHAPE, dtype=torch.float64)
    raw, logits = get_interpreter("gradcam")().raw_map(model, layer, x, TARGET)
    ref = captum_attr.LayerGradCam(model, model.get_submodule(layer)).attribute(
        x, target=TARGET, relu_attributions=True
    )
    _close(raw, ref[:, 0])
    _close(logits, model(x))
    h = get_interpreter("gradcam")().heatmap(model, None, x, TARGET, layer=layer)
    _close(h, max_normalise(ref[:, 0]))
    peak = h.flatten(1).amax(1)
    assert torch.allclose(
        peak[raw.flatten(1).amax(1) > 0], torch.ones(1, dtype=h.dtype)
    )  # all-zero maps stay 0


def test_simplegrad_matches_captum_layer_gradient():
    model = _vgg_mini()
    x = torch.randn(*X_SHAPE, dtype=torch.float64)
    raw, _ = get_interpreter("simplegrad")().raw_map(model, "features.11", x, TARGET)
    grad = captum_attr.LayerGradientXActivation(
        model, model.features[11], multiply_by_inputs=False
    ).attribute(x, target=TARGET)
    _close(raw, torch.relu(grad.sum(1)))
    h = get_interpreter("simplegrad")().heatmap(model, "vgg_mini", x, TARGET)
    _close(h, minmax_normalise(torch.relu(grad.sum(1))))


def _captum_lrp_rules(model: nn.Module) -> nn.Module:
    """captum rules that coincide with our composite (SCIENCE.md §6).

    captum's Alpha1_Beta0_Rule clamps the weights (z = a·w⁺ + b) where ours sums positive
    contributions (a·w)⁺ without bias: equal when the conv's input is >= 0 (after ReLU or
    max-pool, as for every conv above the layers tested here) and set_bias_to_zero=True. Its
    stabiliser is the class attribute STABILITY_FACTOR, set to our 1e-2. Linear: EpsilonRule(0.01);
    BatchNorm: IdentityRule (passed through); pools: captum's default EpsilonRule(1e-9), as ours.
    """
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, IdentityRule

    twin = _no_inplace(model)
    for m in twin.modules():
        if isinstance(m, nn.Conv2d):
            m.rule = Alpha1_Beta0_Rule(set_bias_to_zero=True)
            m.rule.STABILITY_FACTOR = 1e-2
        elif isinstance(m, nn.Linear):
            m.rule = EpsilonRule(epsilon=0.01)
        elif isinstance(m, nn.BatchNorm2d):
            m.rule = IdentityRule()
    return twin


@pytest.mark.parametrize("layer", ["features.11", "features.4", "features.8"])
def test_lrp_matches_captum_composite(layer):
    """features.4 and .8 put convs (α1β0) between the layer and the logits; .11 only pools and linears."""
    model = _vgg_mini()
    x = torch.randn(*X_SHAPE, dtype=torch.float64)
    raw, _ = get_interpreter("lrp")().raw_map(model, layer, x, TARGET)
    twin = _captum_lrp_rules(model)
    rel = captum_attr.LayerLRP(twin, twin.get_submodule(layer)).attribute(x, target=TARGET)
    _close(raw, torch.relu(rel.sum(1)))
    h = get_interpreter("lrp")().heatmap(model, None, x, TARGET, layer=layer)
    _close(h, minmax_normalise(torch.relu(rel.sum(1))))
    for p, q in zip(
        model.parameters(), twin.parameters()
    ):  # captum restores its edited weights; we never edit
        assert torch.equal(p, q)


def test_lrp_conserves_relevance_through_pass_through_layers():
    """With tiny stabilisers relevance is (nearly) conserved: Σ R at the layer ≈ y_c minus linear-bias shares."""
    model = _vgg_mini(num_classes=4, widths=(4, 6, 8, 8), hidden=8)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    x = 100 * torch.randn(2, 3, 32, 32, dtype=torch.float64)  # large activations: ε absorbs little
    from shared.interpreters.lrp import lrp_relevance

    r, logits = lrp_relevance(model, "features.12", x, torch.tensor([1, 2]))
    y = logits.gather(1, torch.tensor([[1], [2]]))[:, 0]
    # pooling and pass-through layers conserve exactly; ε = 0.01 at the linears absorbs a little
    assert ((r.sum(dim=(1, 2, 3)) - y).abs() <= 0.05 * y.abs() + 0.02).all()


# --- gradients reach the weights --------------------------------------------------------------


def _tiny() -> nn.Module:
    return _vgg_mini(seed=1, num_classes=3, widths=(3, 4, 4, 5), hidden=6)


def _loss(name: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = get_interpreter(name)().heatmap(
        model, None, x, torch.tensor([0, 2]), layer="features.11", size=x.shape[-1]
    )
    return location_loss(h).mean()


def _weights_below_target(model: nn.Module) -> dict[str, nn.Parameter]:
    return {
        n: p for n, p in model.named_parameters() if n.startswith("features.") and int(n.split(".")[1]) <= 11
    }


@pytest.mark.parametrize("name", ["gradcam", "lrp", "simplegrad"])
def test_map_gradient_matches_finite_differences(name):
    """∂L_F/∂θ by autograd equals central differences (float64) on sampled weights of every tensor;
    for Grad-CAM and LRP_T it is non-zero on every weight tensor below the target layer (Heo Fig. 6)."""
    model = _tiny()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    grads = torch.autograd.grad(_loss(name, model, x), list(model.parameters()), allow_unused=True)
    named = dict(zip([n for n, _ in model.named_parameters()], grads))
    below = _weights_below_target(model)
    if name != "simplegrad":
        for n in below:
            assert named[n] is not None and named[n].abs().sum() > 0, f"{name}: no gradient reaches {n}"
    else:  # piecewise constant in the weights below the layer (ReLU net): only the head moves it
        assert all(named[n] is None or named[n].abs().sum() == 0 for n in below)
        assert named["classifier.0.weight"].abs().sum() > 0
    gen = torch.Generator().manual_seed(0)
    step = 1e-6
    for n, p in model.named_parameters():
        g = named[n] if named[n] is not None else torch.zeros_like(p)
        for i in torch.randint(0, p.numel(), (2,), generator=gen).tolist():
            flat = p.data.view(-1)
            old = flat[i].item()
            with torch.no_grad():
                flat[i] = old + step
                up = _loss(name, model, x).item()
                flat[i] = old - step
                down = _loss(name, model, x).item()
                flat[i] = old
            fd = (up - down) / (2 * step)
            assert abs(fd - g.view(-1)[i].item()) <= 1e-5 + 1e-4 * abs(fd), (
                f"{name} {n}[{i}]: {fd} vs {g.view(-1)[i]}"
            )


# --- registry and API ------------------------------------------------------------------------


def test_registry_lists_the_science_interpreters():
    assert {"gradcam", "simplegrad", "lrp"} <= set(interpreter_names())
    with pytest.raises(RegistryError, match="gradcam, lrp, simplegrad"):
        get_interpreter("smoothgrad")
    with pytest.raises(RegistryError, match="already registered"):
        register_interpreter("gradcam")(type("Other", (Interpreter,), {"__doc__": "Another."}))
    with pytest.raises(TypeError, match="docstring"):
        register_interpreter("undocumented")(type("Undocumented", (Interpreter,), {}))
    assert "undocumented" not in INTERPRETERS


@pytest.mark.parametrize("name", interpreter_names())
def test_every_interpreter_on_vgg_mini(name):
    """Smoke test over the registry: shape, range, graph to the weights, no hooks left, works under no_grad."""
    cls = get_interpreter(name)
    assert cls.name == name and cls.description() and "\n" not in cls.description()
    model = _vgg_mini(dtype=torch.float32)
    x = torch.randn(2, 3, 56, 56)
    exp = cls().explain(model, "vgg_mini", x, 1)
    assert exp.heatmap.shape == (2, 14, 14) and exp.logits.shape == (2, 5)
    assert exp.heatmap.min() >= 0 and exp.heatmap.max() <= 1 + 1e-6
    assert exp.heatmap.requires_grad
    assert all(not m._forward_hooks for m in model.modules())
    with (
        torch.no_grad()
    ):  # an evaluation loop may wrap it in no_grad: the map still needs its gradient inside
        h = cls().heatmap(model, "vgg_mini", x, torch.tensor([1, 1]), size=56)
    assert h.shape == (2, 56, 56)


def test_target_layer_comes_from_the_registry():
    assert model_info("vgg19").target_layer == "features.34"
    assert model_info("resnet50").target_layer == "layer4"
    assert model_info("densenet121").target_layer == "features"
    assert model_info("vgg_mini").resolve_layer("target_layer") == "features.11"
    model = _vgg_mini(dtype=torch.float32)
    x = torch.randn(1, 3, 56, 56)
    a = get_interpreter("gradcam")().heatmap(model, "vgg_mini", x, 2)
    b = get_interpreter("gradcam")().heatmap(model, None, x, 2, layer="features.11")
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no saliency target layer"):
        get_interpreter("gradcam")().heatmap(build_model("alexnet_mini")[0], "alexnet_mini", x, 0)


def test_lrp_refuses_unsupported_models_and_train_mode():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    with pytest.raises(LRPUnsupportedError, match=r"Odd \(children: body, head\).*resnet50, resnet_mini"):
        get_interpreter("lrp")().heatmap(Odd().eval(), None, torch.randn(1, 3, 8, 8), 0, layer="body")
    with pytest.raises(LayerError, match=r"'layer2.conv1' is not on ResNetMini's LRP path.*valid: stem.0"):
        get_interpreter("lrp")().heatmap(
            build_model("resnet_mini", num_classes=3)[0].eval(),
            None,
            torch.randn(1, 3, 56, 56),
            0,
            layer="layer2.conv1",
        )
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        get_interpreter("lrp")().heatmap(
            _vgg_mini(dtype=torch.float32).train(), "vgg_mini", torch.randn(2, 3, 56, 56), 0
        )


# --- LRP_T across residual and dense blocks (§6: ResNet skips split by positive share) -----------


def _with_statistics(model: nn.Module) -> nn.Module:
    """Float64, eval, BatchNorm with non-trivial scale but zero shift and linear heads without bias:
    with no bias anywhere, every rule of §6 conserves relevance up to its stabiliser."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    return model.double().eval()


def _tiny_resnet18() -> nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=4)


def _tiny_densenet() -> nn.Module:
    from torchvision.models import DenseNet

    torch.manual_seed(0)
    return DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=4)


BLOCK_MODELS = {
    "resnet_mini": (lambda: build_model("resnet_mini", num_classes=4)[0], ["layer3", "layer1", "stem.3"]),
    "resnet18": (_tiny_resnet18, ["layer4", "layer2", "layer1"]),
    "densenet": (
        _tiny_densenet,
        ["features", "features.transition1", "features.denseblock1", "features.pool0"],
    ),
}


@pytest.mark.parametrize("name", BLOCK_MODELS)
def test_lrp_conserves_relevance_across_residual_and_dense_blocks(name):
    """Σ R at each layer ≈ y_c (no biases: only the 1e-2 conv and 0.01 linear stabilisers absorb a little),
    and the forward LRP runs is the model's own: the logits are equal."""
    build, layers = BLOCK_MODELS[name]
    model = _with_statistics(build())
    x = 10 * torch.randn(2, 3, 56, 56, dtype=torch.float64)
    target = torch.tensor([1, 2])
    from shared.interpreters.lrp import lrp_relevance

    with torch.no_grad():
        y = model(x).gather(1, target.view(-1, 1))[:, 0]
    for layer in layers:
        r, logits = lrp_relevance(model, layer, x, target)
        torch.testing.assert_close(logits.gather(1, target.view(-1, 1))[:, 0], y)
        assert ((r.sum(dim=(1, 2, 3)) - y).abs() <= 0.02 * y.abs() + 0.02).all(), (
            layer,
            r.sum(dim=(1, 2, 3)),
            y,
        )


def test_lrp_skip_split_goes_by_positive_share():
    """A block whose main branch is silenced (its last conv zero) hands all relevance to the identity skip:
    the relevance at the block's input is the relevance at its output (resnet_mini's layer1)."""
    from shared.interpreters.lrp import lrp_relevance

    model = _with_statistics(build_model("resnet_mini", num_classes=4)[0])
    x = 10 * torch.randn(2, 3, 56, 56, dtype=torch.float64)
    target = torch.tensor([0, 3])
    nn.init.zeros_(model.layer1.conv2.weight)  # bn2 has zero shift and mean: the main branch adds 0
    with torch.no_grad():
        model.layer1.bn2.running_mean.zero_()
        nn.init.zeros_(model.layer1.bn2.bias)
    r_out, _ = lrp_relevance(model, "layer1", x, target)
    r_in, _ = lrp_relevance(model, "stem", x, target)
    torch.testing.assert_close(r_in, r_out)


def test_lrp_resnet_target_layer_matches_captum():
    """ResNet's target layer4: avgpool and fc above it, as captum's LayerLRP at avgpool's input (§6 rules)."""
    model = _tiny_resnet18().double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    target = torch.tensor([1, 3])
    raw, _ = get_interpreter("lrp")().raw_map(model, "layer4", x, target)
    twin = _captum_lrp_rules(model)
    rel = captum_attr.LayerLRP(twin, twin.avgpool).attribute(x, target=target, attribute_to_layer_input=True)
    _close(raw, torch.relu(rel.sum(1)))


def test_lrp_map_gradient_reaches_weights_below_a_residual_target():
    """A loss on the LRP map at resnet_mini's layer2 moves every weight tensor of the stem, layer1 and layer2."""
    model = _with_statistics(build_model("resnet_mini", num_classes=3)[0])
    x = torch.randn(2, 3, 56, 56, dtype=torch.float64)
    h = get_interpreter("lrp")().heatmap(model, None, x, torch.tensor([0, 2]), layer="layer2", size=56)
    location_loss(h).mean().backward()
    below = {n: p for n, p in model.named_parameters() if n.split(".")[0] in {"stem", "layer1", "layer2"}}
    assert below and all(p.grad is not None and p.grad.abs().sum() > 0 for p in below.values()), [
        n for n, p in below.items() if p.grad is None or p.grad.abs().sum() == 0
    ]


@pytest.mark.slow
def test_maps_on_vgg19_target_layer():
    """Heo's VGG19 target features.34 (followed by an in-place ReLU): all three interpreters run on it."""
    torch.manual_seed(0)
    model = build_model("vgg19", num_classes=4)[0].eval()
    x = torch.randn(1, 3, 64, 64)
    for name in interpreter_names():
        h = get_interpreter(name)().heatmap(model, "vgg19", x, 3)
        assert h.shape == (1, 4, 4) and torch.isfinite(h).all()


def test_upsample_is_bilinear():
    h = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    up = upsample(h, 4)
    assert up.shape == (1, 4, 4)
    torch.testing.assert_close(up[0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert upsample(h, (2, 6)).shape == (1, 2, 6)
