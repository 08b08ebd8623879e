"""Synthetic feature visualisation (SCIENCE.md §5): parameterisation, transforms, optimiser, job."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import jobs.featureviz as fv_job
from jobs.featureviz import FeatureVizSpec, compare_featureviz, read_featureviz, run_featureviz
from shared import store
from shared.embedders.base import Embedder
from shared.featureviz import (
    FourierImage,
    RenderConfig,
    TransformSpec,
    apply_affine,
    measure,
    random_transform,
    render_units,
    rfft2d_freqs,
)
from shared.featureviz.param import COLOR_MIX
from shared.featureviz.transforms import random_affine
from shared.models import save_checkpoint
from shared.models.zoo import LayerError, build_model

MODEL = "alexnet_mini"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(MODEL)[0].eval()


def _gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_fourier_image_shape_range_and_seed():
    p = FourierImage(3, 20, 24, generators=_gens(3))
    x = p()
    assert p.spectrum.shape == (3, 3, 20, 13, 2) and x.shape == (3, 3, 20, 24)
    assert 0.0 < x.min() and x.max() < 1.0
    with torch.no_grad():
        p.spectrum.mul_(1e4)  # far out: the sigmoid still keeps pixels in [0, 1]
    assert 0.0 <= p().min() and p().max() <= 1.0
    assert torch.equal(x, FourierImage(3, 20, 24, generators=_gens(3))())
    assert not torch.equal(x, FourierImage(3, 20, 24, generators=_gens(3, seed=7))())
    assert rfft2d_freqs(20, 24).shape == (20, 13) and rfft2d_freqs(20, 24)[0, 0] == 0
    # lucid normalises the colour matrix by its largest column norm
    assert torch.linalg.vector_norm(COLOR_MIX, dim=0).max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 generators"):
        FourierImage(3, 8, 8, generators=_gens(2))


def test_spectrum_is_one_over_f_scaled():
    """A unit coefficient at frequency f gives an image component of amplitude ~ 1/f (lucid's decay_power=1)."""
    p = FourierImage(1, 32, 32)
    s = p.scale[0, 0, :, :, 0]
    assert s[0, 4] / s[0, 8] == pytest.approx(2.0) and s[4, 0] == pytest.approx(s[0, 4])


def test_transforms_keep_shape_and_identity_is_identity():
    x = torch.rand(4, 3, 56, 56, requires_grad=True)
    y = random_transform(x, TransformSpec(), _gens(4))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    none = TransformSpec(jitter_px_at_224=0.0, scale=(1.0, 1.0), rotate_deg=0.0)
    theta = random_affine(torch.rand(4, 4, dtype=torch.float64), 56, 56, none)
    assert torch.allclose(apply_affine(x.detach(), theta), x.detach(), atol=1e-5)
    assert TransformSpec().jitter_px(56) == pytest.approx(2.0)
    # the drawn ranges: |shift| <= 8 px at 224 -> 2/56 * 2 in normalised units; zoom in [0.9, 1.1]
    th = random_affine(torch.rand(500, 4, dtype=torch.float64), 56, 56, TransformSpec())
    zoom = 1.0 / torch.linalg.det(th[:, :, :2]).sqrt()
    assert zoom.min() >= 0.9 - 1e-5 and zoom.max() <= 1.1 + 1e-5
    assert th[:, :, 2].abs().max() <= 2.0 * 2 / 56 + 1e-6
    with pytest.raises(ValueError, match="scale"):
        TransformSpec(scale=(1.1, 0.9))


def test_activation_rises_and_render_is_seeded(model):
    units = [0, 1, 3]  # 32 px images: conv5 is 3 x 3 there, a quarter of the 56 px cost
    start = render_units(model, MODEL, "conv5", units, RenderConfig(steps=1, size=32))
    cfg = RenderConfig(steps=10, lr=0.1, size=32)
    end = render_units(model, MODEL, "conv5", units, cfg)
    alive = start.activation > 0
    assert alive.sum() >= 2 and (end.activation[alive] > start.activation[alive]).all()
    assert end.activation[alive].sum() > 1.3 * start.activation[alive].sum()
    assert end.images.shape == (3, 3, 32, 32) and 0 <= end.images.min() and end.images.max() <= 1
    # seeded, and a unit's image does not depend on the other units in its batch
    again = render_units(model, MODEL, "conv5", [3], cfg)
    assert torch.allclose(again.images[0], end.images[2], atol=1e-4)
    assert not any(p.requires_grad is False for p in model.parameters())  # flags restored
    act, score = measure(model, MODEL, "conv5", end.images, units)
    assert torch.allclose(act, end.activation) and (score >= 0).all()


def test_bad_units_and_layers_say_what_is_valid(model):
    with pytest.raises(ValueError, match=r"units 0\.\.63"):
        render_units(model, MODEL, "conv5", [64], RenderConfig(steps=1))
    with pytest.raises(LayerError, match="conv5"):
        render_units(model, MODEL, "conv9", [0], RenderConfig(steps=1))
    with pytest.raises(ValueError, match="steps=0"):
        RenderConfig(steps=0)


class _MeanColour(Embedder):
    """A tiny embedder for tests: the mean RGB of the image and a constant."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.dim = 4

    def describe(self) -> dict:
        return {"kind": "test-mean-colour", "spec": "test", "dim": 4}

    def _preprocess(self, image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, np.float32).mean(axis=(0, 1)) / 255.0)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([batch, torch.ones(len(batch), 1)], dim=1)


def test_job_commits_reuses_and_compares(tmp_path, model, monkeypatch):
    ckpt_a = save_checkpoint(model, MODEL, str(tmp_path / "a.pt"))
    torch.manual_seed(1)
    ckpt_b = save_checkpoint(build_model(MODEL)[0], MODEL, str(tmp_path / "b.pt"))
    spec = FeatureVizSpec(MODEL, ckpt_a, "conv5", units=(0, 1, 3), steps=2, size=32, batch_units=2)
    res = run_featureviz(spec, str(tmp_path / "s"))
    assert not res.reused and res.rendering.images.shape == (3, 3, 32, 32)
    m = store.read_manifest(res.uri)
    assert m["kind"] == "featureviz" and m["units"] == [0, 1, 3] and m["files"] == fv_job.FILES
    assert all(store.exists(store.join(res.uri, f)) for f in m["files"])
    back = read_featureviz(res.uri)
    assert torch.equal(back.images, res.rendering.images) and torch.equal(
        back.activation, res.rendering.activation
    )

    def no_render(*a, **k):
        raise AssertionError("a committed rendering must be reused")

    monkeypatch.setattr(fv_job, "render_units", no_render)
    assert run_featureviz(
        FeatureVizSpec(MODEL, ckpt_a, "conv5", units=(0, 1, 3), steps=2, size=32), str(tmp_path / "s")
    ).reused
    monkeypatch.undo()
    assert FeatureVizSpec(MODEL, ckpt_b, "conv5", units=(0, 1, 3), steps=2, size=32).key() != spec.key()

    other = run_featureviz(
        FeatureVizSpec(MODEL, ckpt_b, "conv5", units=(0, 1, 3), steps=2, size=32), str(tmp_path / "s")
    )
    cmp = compare_featureviz(res.uri, other.uri, _MeanColour())
    assert cmp.units == [0, 1, 3] and cmp.embedder["kind"] == "test-mean-colour"
    assert np.allclose(cmp.act_before, res.rendering.activation.numpy(), rtol=1e-4)
    assert np.allclose(cmp.act_after, other.rendering.activation.numpy(), rtol=1e-4)
    assert ((cmp.cosine > 0.5) & (cmp.cosine <= 1.0 + 1e-5)).all()
    assert np.allclose(compare_featureviz(res.uri, res.uri, _MeanColour()).cosine, 1.0, atol=1e-5)
    assert len(cmp.rows()) == 3 and set(cmp.rows()[0]) >= {"unit", "act_before", "act_after", "cosine"}
    layer2 = run_featureviz(
        FeatureVizSpec(MODEL, ckpt_b, "conv4", units=(0, 1, 3), steps=1, size=32), str(tmp_path / "s")
    )
    with pytest.raises(ValueError, match="different layer"):
        compare_featureviz(res.uri, layer2.uri, _MeanColour())


def synthetic_vs_natural(data: str, store_uri: str, steps: int = 512, **pretrain: object) -> dict:
    """Pretrain the demo alexnet_mini (reused when done), render every conv5 unit, and compare each unit's
    synthetic image with its best natural validation image, on the §5 objective and on the §1 score."""
    from jobs.pretrain import PretrainSpec, run_pretrain
    from shared.datasets import Preprocess, decode_image, iter_records
    from shared.featureviz import layer_activations
    from shared.models import load_checkpoint

    res = run_pretrain(PretrainSpec(dataset=data, **pretrain), store_uri)  # type: ignore[arg-type]
    model = load_checkpoint(res.model_uri)[0].eval()
    pixels = Preprocess(resize=64, crop=56, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # [0, 1]
    val = torch.from_numpy(np.stack([decode_image(r["image"], pixels) for r in iter_records(data, "val")]))
    nat = [layer_activations(model, MODEL, "conv5", chunk) for chunk in val.split(200)]
    nat_act = torch.cat([a for a, _ in nat]).max(dim=0).values
    nat_score = torch.cat([s for _, s in nat]).max(dim=0).values
    t0 = time.time()
    fv = run_featureviz(FeatureVizSpec(MODEL, res.model_uri, "conv5", steps=steps), store_uri)
    r = fv.rendering
    return {
        "val_acc": res.val_acc,
        "units": len(r.units),
        "steps": steps,
        "share_activation": float((r.activation > nat_act).float().mean()),
        "share_score": float((r.score > nat_score).float().mean()),
        "dead_synthetic": int((r.activation == 0).sum()),
        "median_ratio_activation": float((r.activation / nat_act.clamp_min(1e-8)).median()),
        "render_seconds": time.time() - t0,
        "uri": fv.uri,
    }


@pytest.mark.slow
@pytest.mark.goals  # 16-epoch pretrain + 512-step renders, ~10 min on 2 cores
def test_synthetic_images_beat_the_best_natural_images(tmp_path):
    """The issue's goal: on the demo model, >= 80 % of conv5 units are driven harder by their synthetic image
    than by their best natural validation image (measured: see the report / test output)."""
    from shared.synth import generate

    generate(str(tmp_path / "data"))
    out = synthetic_vs_natural(str(tmp_path / "data"), str(tmp_path / "store"))
    print(out)
    assert out["share_activation"] >= 0.8 and out["share_score"] >= 0.8


def test_redirected_relu_lets_a_dead_unit_start():
    from shared.featureviz.render import RedirectedReLU

    x = torch.tensor([[-1.0, -2.0, 0.5], [-1.0, -2.0, -3.0]], requires_grad=True)
    y = RedirectedReLU.apply(x)
    assert torch.equal(y, x.clamp_min(0))
    (-y.sum()).backward(retain_graph=True)  # maximise: grad of the loss is -1 everywhere
    # row 0 is alive: the ordinary ReLU gradient; row 1 is dead everywhere: the gradient passes through
    assert torch.equal(x.grad, torch.tensor([[0.0, 0.0, -1.0], [-1.0, -1.0, -1.0]]))
    x.grad = None
    (y.sum()).backward()  # minimising a dead row must not push it lower
    assert torch.equal(x.grad[1], torch.zeros(3))


def test_a_unit_dead_on_the_start_image_comes_alive(model):
    """Unit 8 of the seeded random model is 0 everywhere on its 32 px start image (checked below)."""
    cfg = RenderConfig(steps=10, lr=0.1, size=32)
    assert render_units(model, MODEL, "conv5", [8], RenderConfig(steps=1, size=32)).activation[0] == 0
    plain = render_units(
        model, MODEL, "conv5", [8], RenderConfig(steps=10, lr=0.1, size=32, redirect_relu=False)
    )
    assert plain.activation[0] == 0 and render_units(model, MODEL, "conv5", [8], cfg).activation[0] > 0
