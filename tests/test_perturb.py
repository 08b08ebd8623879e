"""Input-space attacks on interpreters (SCIENCE.md §7): PGD vs torchattacks, smooth twin, Adv², C&W, PSE, metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared.interpreters import get_interpreter
from shared.perturb import (
    PERTURBATIONS,
    Normalise,
    PixelModel,
    Victim,
    adv2,
    classify,
    cw_l2,
    get_perturbation,
    grid_regions,
    map_l1,
    map_l2,
    mask_iou,
    perturbation_names,
    pgd,
    random_targets,
    region_effects,
    register_perturbation,
    shares_in_mask,
    smooth_functional_relu,
    smooth_relu_twin,
    success_rate,
    topk_iou,
    twin_map_fn,
)
from shared.perturb.base import Perturbation, check_targets
from shared.perturb.pse import BALANCED, INACTIVE, PROMOTION, SUPPRESSION
from shared.perturb.smooth import SmoothReLU, smooth_relu
from shared.registry import RegistryError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Tiny(nn.Module):
    """Conv/ReLU modules plus a functional ReLU in forward (as torchvision's DenseNet)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
        )
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.features(x), inplace=True)
        return self.head(a.mean(dim=(2, 3)))


def tiny(seed: int = 0) -> Tiny:
    """A random Tiny whose logits depend on the input (a scaled head, no bias), so attacks can succeed."""
    torch.manual_seed(seed)
    model = Tiny().eval()
    with torch.no_grad():
        model.head.weight.mul_(20)
        model.head.bias.zero_()
    return model


def images(n: int = 4, side: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def victim(model: nn.Module) -> Victim:
    return Victim(model, None, Normalise(MEAN, STD), get_interpreter("gradcam")(), layer="features.3")


# --- PGD -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1 / 255, 2 / 255])
def test_pgd_matches_torchattacks_targeted(alpha):
    torchattacks = pytest.importorskip("torchattacks")
    model = PixelModel(tiny(), Normalise(MEAN, STD))
    x, t = images(), torch.tensor([0, 1, 2, 3])
    ref = torchattacks.PGD(model, eps=8 / 255, alpha=alpha, steps=12, random_start=False)
    ref.set_mode_targeted_by_label(quiet=True)
    expected = ref(x, t)
    ours = pgd(model, x, t, eps=8 / 255, step=alpha, steps=12)
    assert (ours - x).abs().max() > 0  # it moved
    assert torch.allclose(ours, expected, atol=1e-6, rtol=0)


def test_pgd_stays_in_budget_and_box_and_rejects_bad_input():
    model = PixelModel(tiny(), Normalise(MEAN, STD))
    x = images()
    x[0] = 1.0  # on the box edge
    adv = pgd(
        model,
        x,
        2,
        eps=4 / 255,
        step=2 / 255,
        steps=5,
        random_start=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert (adv - x).abs().max() <= 4 / 255 + 1e-7
    assert adv.min() >= 0 and adv.max() <= 1
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, 2, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, 2, eps=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(model, x * 3 - 1, 2, steps=1)
    with pytest.raises(ValueError, match="out of range"):
        check_targets(torch.tensor([0, 7]), 2, 5, x.device)


# --- smooth twin ------------------------------------------------------------------------------------


def test_smooth_relu_backward_is_the_documented_formula():
    x = torch.tensor([-1.0, -1e-3, 0.0, 1e-3, 0.01, 1.0], requires_grad=True)
    (g,) = torch.autograd.grad(smooth_relu(x).sum(), x)
    xd = x.detach()
    assert torch.equal(smooth_relu(xd), torch.relu(xd))
    assert torch.allclose(g, torch.relu(xd) / torch.sqrt(xd**2 + 1e-4))


def test_twin_forward_equals_model_and_second_derivative_appears():
    model = tiny()
    twin = smooth_relu_twin(model)
    assert isinstance(twin.features[1], SmoothReLU) and type(model.features[1]) is nn.ReLU
    saved = F.relu
    x = images(2)
    with smooth_functional_relu():
        assert F.relu is not saved
        assert torch.equal(twin(x), model(x))
    assert F.relu is saved  # restored
    v = torch.randn_like(x, generator=torch.Generator().manual_seed(3))

    def hvp(net: nn.Module) -> torch.Tensor | None:
        xi = x.clone().requires_grad_(True)
        with smooth_functional_relu() if net is twin else torch.enable_grad():
            (g,) = torch.autograd.grad(net(xi)[:, 1].sum(), xi, create_graph=True)
            (h,) = torch.autograd.grad((g * v).sum(), xi, allow_unused=True)
        return h

    plain = hvp(model)
    assert plain is None or plain.abs().max() == 0  # ReLU nets: zero second derivative
    assert hvp(twin).abs().max() > 0


# --- Adv² -------------------------------------------------------------------------------------------


def test_adv2_lowers_the_map_term_against_plain_pgd():
    model = tiny(2)
    v = victim(model)
    x, t = images(6, seed=4), torch.tensor([1, 2, 3, 4, 0, 1])
    true = v.logits(x).argmax(1)
    benign = v.maps(x, true)
    g = twin_map_fn(v.interpreter, v.twin, None, v.normalise, t, v.layer, (16, 16))
    r = adv2(
        v.pixel,
        x,
        t,
        g,
        benign,
        eps=8 / 255,
        step=1 / 255,
        steps_ce=4,
        steps_joint=12,
        lam_start=50.0,
        lam_end=500.0,
    )
    plain = pgd(v.pixel, x, t, eps=8 / 255, step=1 / 255, steps=16)
    d_adv2 = map_l2(v.maps(r.adv, t), benign).mean()
    d_pgd = map_l2(v.maps(plain, t), benign).mean()
    assert d_adv2 < d_pgd
    assert (r.adv - x).abs().max() <= 8 / 255 + 1e-7


# --- C&W and PSE ------------------------------------------------------------------------------------


def test_cw_l2_reaches_the_target_with_a_small_perturbation():
    model = PixelModel(tiny(), Normalise(MEAN, STD))
    x = images(4)
    t = (model(x).argmax(1) + 1) % 5
    adv = cw_l2(model, x, t, c=10.0, steps=30, lr=0.05, search_steps=2)
    assert adv.min() >= 0 and adv.max() <= 1
    assert success_rate(model(adv), t) == 1.0
    assert (adv - x).flatten(1).norm(dim=1).max() < 5.0


def test_classify_signs_zeros_and_thresholds():
    d0 = torch.tensor([[1.0, 1.0, 1.0, 0.0, -1.0, 0.0, 1.0]])
    dt = torch.tensor([[4.0, 0.25, 1.5, 0.0, -2.0, 3.0, -1.0]])
    r, kind = classify(d0, dt)
    assert kind.tolist() == [[PROMOTION, SUPPRESSION, BALANCED, INACTIVE, INACTIVE, PROMOTION, SUPPRESSION]]
    assert r[0, 0].item() == pytest.approx(math.log2(4.0), abs=1e-5)
    assert r[0, 2].item() == pytest.approx(math.log2(1.5), abs=1e-5)
    assert math.isnan(r[0, 3].item()) and math.isnan(r[0, 4].item())


def test_grid_regions_and_shares_in_mask_by_hand():
    reg = grid_regions(4, 4, 2)
    assert reg.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert grid_regions(5, 5, 2)[:, 0].tolist() == [0, 0, 0, 2, 2]
    kind = torch.tensor([[PROMOTION, SUPPRESSION, BALANCED, PROMOTION]])
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :] = True  # 2 px in region 0, 2 px in region 1
    mask[0, 3, 3] = True  # 1 px in region 3
    assert shares_in_mask(kind, reg, mask).tolist() == [[pytest.approx(0.6), pytest.approx(0.4), 0.0, 0.0]]
    with pytest.raises(ValueError, match="region map"):
        shares_in_mask(kind, reg, mask[:, :3])


def test_region_effects_add_up_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = images(2, side=8)
    adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    r = region_effects(model, x, adv, torch.tensor([0, 1]), torch.tensor([2, 3]), n=4)
    with torch.no_grad():
        full = model(adv) - model(x)
    assert torch.allclose(r.dt.sum(1), full[[0, 1], [2, 3]], atol=1e-5)
    assert torch.allclose(r.d0.sum(1), -full[[0, 1], [0, 1]], atol=1e-5)
    assert r.kind.shape == (2, 16)


# --- metrics ----------------------------------------------------------------------------------------


def test_map_metrics_by_hand():
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    b = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    assert map_l1(a, b).tolist() == [0.5]
    assert map_l2(a, b).tolist() == [pytest.approx(math.sqrt(0.5))]
    assert topk_iou(a, b, 25).tolist() == [0.0]
    assert topk_iou(a, a, 25).tolist() == [1.0]
    m1 = torch.tensor([[[True, True], [False, False]]])
    m2 = torch.tensor([[[True, False], [True, False]]])
    assert mask_iou(m1, m2).tolist() == [pytest.approx(1 / 3)]
    logits = torch.tensor([[0.0, 2.0], [3.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert success_rate(logits, torch.tensor([1, 1, 1, 0])).item() == 0.75
    with pytest.raises(ValueError, match="upsample"):
        map_l1(a, torch.zeros(1, 3, 3))


def test_random_targets_differ_from_labels():
    labels = torch.arange(10) % 5
    t = random_targets(labels, 5, torch.Generator().manual_seed(0))
    assert ((t != labels) & (t >= 0) & (t < 5)).all()


# --- registry and end to end ------------------------------------------------------------------------


def test_registry_lists_names_and_rejects_duplicates():
    assert perturbation_names() == ["adv2", "pgd", "pse"]
    with pytest.raises(RegistryError, match="adv2, pgd, pse"):
        get_perturbation("fgsm")
    with pytest.raises(RegistryError, match="already registered"):
        register_perturbation("pgd")(type("Again", (Perturbation,), {"__doc__": "again"}))
    for name in perturbation_names():
        assert PERTURBATIONS.get(name).description()


@pytest.mark.parametrize(
    "name,params",
    [
        ("pgd", {"steps": 3}),
        ("adv2", {"steps_ce": 2, "steps_joint": 2}),
        ("pse", {"steps": 5, "grid": 4}),
    ],
)
def test_each_perturbation_runs_on_a_tiny_victim(name, params):
    v, x = victim(tiny()), images(2)
    true = v.logits(x).argmax(1)
    attack = get_perturbation(name)(**params)
    cols = attack.attack(v, x, true, (true + 1) % 5)
    assert cols["adv"].shape == x.shape and cols["success"].shape == (2,)
    assert attack.params()["formula"]
    if name == "pse":
        assert cols["region_kind"].shape == (2, 16)
        total = sum(cols[f"cam_true_{k}"] for k in ("promotion", "suppression", "balanced", "inactive"))
        assert torch.allclose(total, torch.ones(2))
    else:
        assert cols["map_l1"].shape == (2,) and (cols["map_iou"] <= 1).all()
