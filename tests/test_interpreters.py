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
    model = build_model("resnet_mini", num_classes=3)[0].eval()
    with pytest.raises(LRPUnsupportedError, match=r"model 'resnet_mini'.*vgg_mini, vgg19"):
        get_interpreter("lrp")().heatmap(model, "resnet_mini", torch.randn(1, 3, 56, 56), 0, layer="layer3")
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        get_interpreter("lrp")().heatmap(
            _vgg_mini(dtype=torch.float32).train(), "vgg_mini", torch.randn(2, 3, 56, 56), 0
        )


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
