"""Embedders: specs and registry errors, the open_clip checkpoint path, the reference encoder.

No test downloads anything: open_clip is given a tiny model config registered here
and weights saved from it, and an autouse fixture makes any tag download fail.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from shared import synth
from shared.embedders import (
    Embedder,
    EmbedderError,
    OpenClipEmbedder,
    ReferenceEmbedder,
    embedder_names,
    get_embedder,
    parse_spec,
    register_embedder,
)
from shared.registry import RegistryError

TINY_CLIP = "vizsweep-test-tiny-vit"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch pretrained weights fails at once instead of reaching for the network."""
    import open_clip.factory

    def refuse(*args, **kwargs):
        raise OSError("test: downloads are disabled")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", refuse)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(model name, weights path, in-memory model, its eval transform) for a 32 px two-layer ViT."""
    import open_clip

    d = tmp_path_factory.mktemp("open_clip")
    (d / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(d / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None)
    path = d / "tiny.pt"
    torch.save(model.state_dict(), path)
    return TINY_CLIP, str(path), model.eval(), preprocess


@pytest.fixture(scope="session")
def resnet_ckpt(tmp_path_factory) -> str:
    """A randomly initialised resnet_mini saved as a vizsweep-model-v1 checkpoint."""
    from shared.models import build_model, save_checkpoint

    torch.manual_seed(1)
    model, _ = build_model("resnet_mini")
    return save_checkpoint(
        model, "resnet_mini", str(tmp_path_factory.mktemp("ref") / "model.pt"), {"val_acc": 0.0}
    )


def _images(labels: list[int], split: str = "val", size: int = 64) -> list[bytes]:
    return [synth.render(lab, 0, split, i, size=size, classes=16) for i, lab in enumerate(labels)]


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# --- specs and registry ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, cls, kwargs",
    [
        ("open_clip", OpenClipEmbedder, {}),
        ("open_clip:ViT-B-32", OpenClipEmbedder, {"model_name": "ViT-B-32"}),
        ("open_clip:ViT-B-32:openai", OpenClipEmbedder, {"model_name": "ViT-B-32", "pretrained": "openai"}),
        (" open_clip:RN50:openai ", OpenClipEmbedder, {"model_name": "RN50", "pretrained": "openai"}),
        (
            "open_clip:ViT-B-32-quickgelu:s3://b/w/open_clip_model.safetensors",
            OpenClipEmbedder,
            {"model_name": "ViT-B-32-quickgelu", "pretrained": "s3://b/w/open_clip_model.safetensors"},
        ),
        (
            "open_clip:ViT-B-32:/w/b32.bin",
            OpenClipEmbedder,
            {"model_name": "ViT-B-32", "pretrained": "/w/b32.bin"},
        ),
        (
            "reference:s3://bucket/models/k/model.pt",
            ReferenceEmbedder,
            {"checkpoint_uri": "s3://bucket/models/k/model.pt"},
        ),
        ("reference:file:///m/model.pt", ReferenceEmbedder, {"checkpoint_uri": "file:///m/model.pt"}),
        ({"name": "open_clip", "pretrained": "/w.bin"}, OpenClipEmbedder, {"pretrained": "/w.bin"}),
        ({"name": "reference", "checkpoint_uri": "m.pt"}, ReferenceEmbedder, {"checkpoint_uri": "m.pt"}),
    ],
)
def test_parse_spec(spec, cls, kwargs):
    assert parse_spec(spec) == (cls, kwargs)


@pytest.mark.parametrize(
    "spec, error, fragment",
    [
        ("clip", RegistryError, "valid embedders: open_clip, reference"),
        ("", RegistryError, "unknown embedder ''"),
        ({"name": "nope"}, RegistryError, "valid embedders: open_clip, reference"),
        ("reference", EmbedderError, "needs a checkpoint"),
        ("reference:", EmbedderError, "needs a checkpoint"),
        ("open_clip:", EmbedderError, "no model name"),
        ("open_clip::openai", EmbedderError, "no model name"),
        ("open_clip:ViT-B-32:", EmbedderError, "names no weights"),
        ("open_clip:hf-hub:org/repo", EmbedderError, "use a dict spec"),
        ({"model_name": "ViT-B-32"}, EmbedderError, "has no 'name'"),
        ({"name": "open_clip", "model": "ViT-B-32"}, EmbedderError, "valid options: model_name, pretrained"),
        ({"name": "reference", "uri": "m.pt"}, EmbedderError, "valid options: checkpoint_uri, device"),
        (42, EmbedderError, "must be a string"),
    ],
)
def test_parse_spec_errors(spec, error, fragment):
    with pytest.raises(error) as info:
        get_embedder(spec)
    assert fragment in str(info.value)


def test_register_duplicate_raises():
    before = embedder_names()
    with pytest.raises(RegistryError, match="'open_clip' is already registered"):
        register_embedder("open_clip")(type("Other", (ReferenceEmbedder,), {}))
    assert embedder_names() == before
    assert OpenClipEmbedder.name == "open_clip"  # the failed registration did not rename anything


def test_option_given_twice(resnet_ckpt):
    with pytest.raises(EmbedderError, match="given both"):
        get_embedder(f"reference:{resnet_ckpt}", checkpoint_uri=resnet_ckpt)
    with pytest.raises(EmbedderError, match="no option"):
        get_embedder(f"reference:{resnet_ckpt}", batch=3)


# --- open_clip ---------------------------------------------------------------------------


def test_open_clip_checkpoint_round_trip(tiny_clip):
    name, path, model, preprocess = tiny_clip
    emb = OpenClipEmbedder(name, pretrained=path, device="cpu")
    pil = [Image.open(io.BytesIO(b)) for b in _images([0, 1, 2, 3, 4])]
    got = emb.embed_images(pil, batch_size=5)
    with torch.no_grad():
        want = torch.nn.functional.normalize(
            model.encode_image(torch.stack([preprocess(p) for p in pil])), dim=1
        )
    np.testing.assert_array_equal(got, want.numpy())
    assert got.dtype == np.float32 and got.shape == (5, TINY_CLIP_CFG["embed_dim"])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    # bytes in, PIL in: same pixels (PNG is lossless), same rows; batching does not change values beyond rounding
    np.testing.assert_allclose(
        emb.embed_images([_png(p.convert("RGB")) for p in pil], batch_size=2), got, atol=1e-6
    )
    d = emb.describe()
    assert d == {
        "kind": "open_clip",
        "spec": f"open_clip:{name}:file://{path}",
        "model": name,
        "pretrained": f"file://{path}",
        "quick_gelu": False,
        "image_size": [32, 32],
        "dim": 32,
    }
    json.dumps(d)
    np.testing.assert_array_equal(get_embedder(d["spec"]).embed_images(pil, batch_size=5), got)


def test_open_clip_local_dir(tiny_clip, tmp_path):
    """open_clip's own staging format: a folder with open_clip_config.json and the weights; dict spec only."""
    name, path, _, _ = tiny_clip
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    shutil.copy(path, tmp_path / "open_clip_pytorch_model.bin")
    emb = get_embedder({"name": "open_clip", "model_name": f"local-dir:{tmp_path}"})
    images = _images([0, 7])
    np.testing.assert_array_equal(emb.embed_images(images), OpenClipEmbedder(name, path).embed_images(images))
    d = emb.describe()
    assert (
        d["spec"] == {"name": "open_clip", "model_name": f"local-dir:{tmp_path}"} and d["pretrained"] is None
    )
    np.testing.assert_array_equal(get_embedder(d["spec"]).embed_images(images), emb.embed_images(images))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"model_name": "ViT-Nope"}, "unknown open_clip model 'ViT-Nope'; valid: "),
        ({"pretrained": None}, "needs weights"),
        ({"pretrained": "bogus"}, "neither a tag of open_clip model 'ViT-B-32' (valid: openai, "),
        ({"pretrained": "/no/such/weights.bin"}, "not found"),
        ({"pretrained": "openai", "quick_gelu": False}, "contradicts the weights ViT-B-32:openai"),
        (
            {"model_name": "ViT-B-32-quickgelu", "pretrained": "/w.bin", "quick_gelu": False},
            "contradicts model config",
        ),
    ],
)
def test_open_clip_bad_weights(kwargs, fragment):
    with pytest.raises(EmbedderError) as info:
        OpenClipEmbedder(**kwargs)
    assert fragment in str(info.value)


def test_open_clip_offline_tag_explains_staging(tmp_path):
    with pytest.raises(EmbedderError) as info:
        OpenClipEmbedder("ViT-B-32", "openai", cache_dir=str(tmp_path))
    msg = str(info.value)
    for fragment in (
        "downloads are disabled",
        "timm/vit_base_patch32_clip_224.openai",
        str(tmp_path),
        "HF_HUB_CACHE",
        "s3://",
    ):
        assert fragment in msg


@pytest.mark.parametrize(
    "model, tag, quick_gelu",
    [
        ("ViT-B-32", "openai", True),
        ("ViT-B-32", "laion2b_s34b_b79k", False),
        ("ViT-B-32-quickgelu", "openai", False),
    ],
)
def test_open_clip_activation_follows_the_tag(monkeypatch, model, tag, quick_gelu):
    """OpenAI's weights were trained with QuickGELU; plain 'ViT-B-32' must be forced to it (forcing is redundant for -quickgelu)."""
    import open_clip

    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake)
    with pytest.raises(EmbedderError):
        OpenClipEmbedder(model, tag)
    assert seen["force_quick_gelu"] is quick_gelu and seen["weights_only"] is True


@pytest.mark.slow
def test_open_clip_from_s3(s3_server, tiny_clip):
    from shared import store

    name, path, _, _ = tiny_clip
    uri = f"s3://{s3_server.bucket}/embedders/tiny.pt"
    store.upload_file(path, uri)
    images = _images([3, 4])
    local = OpenClipEmbedder(name, pretrained=path)
    remote = OpenClipEmbedder(name, pretrained=uri)
    assert remote.describe()["pretrained"] == uri
    np.testing.assert_array_equal(remote.embed_images(images), local.embed_images(images))


# --- reference -----------------------------------------------------------------------------


def test_reference_embedder(resnet_ckpt):
    from shared.datasets import decode_image
    from shared.models import load_checkpoint, model_info

    images = _images([0, 1, 2, 0, 5])
    emb = ReferenceEmbedder(resnet_ckpt)
    z = emb.embed_images(images + images[:1], batch_size=4)
    assert z.shape == (6, 128) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(z[5], z[0], atol=1e-6)  # same image, same embedding (other batch)
    again = ReferenceEmbedder(resnet_ckpt).embed_images(images + images[:1], batch_size=4)
    np.testing.assert_array_equal(again, z)  # a fresh load, same batches: bit-identical
    # the pixels are those of the training/activation pipeline (decode_image) and the features the head's input
    model, _ = load_checkpoint(resnet_ckpt)
    model.eval()
    feats = {}
    model.fc.register_forward_hook(lambda m, args, out: feats.setdefault("x", args[0]))
    x = torch.from_numpy(np.stack([decode_image(b, model_info("resnet_mini").preprocess) for b in images]))
    with torch.no_grad():
        model(x)
    np.testing.assert_allclose(z[:5], torch.nn.functional.normalize(feats["x"], dim=1).numpy(), atol=1e-5)
    d = emb.describe()
    assert (d["kind"], d["model"], d["checkpoint"], d["dim"], d["layer"]) == (
        "reference",
        "resnet_mini",
        resnet_ckpt,
        128,
        "input of fc",
    )
    assert get_embedder(d["spec"]).describe() == d


def test_reference_rejects_bare_state_dict(tmp_path):
    from shared.models import build_model

    path = tmp_path / "bare.pt"
    torch.save(build_model("resnet_mini")[0].state_dict(), path)
    with pytest.raises(EmbedderError, match="train_reference_encoder"):
        ReferenceEmbedder(str(path))
    with pytest.raises(EmbedderError, match="not found"):
        ReferenceEmbedder(str(tmp_path / "missing.pt"))


def test_embed_images_inputs(resnet_ckpt):
    emb = ReferenceEmbedder(resnet_ckpt)
    assert emb.embed_images([]).shape == (0, 128)
    with pytest.raises(EmbedderError, match="image 1 .* cannot be decoded"):
        emb.embed_images([_images([0])[0], b"not a jpeg"])
    with pytest.raises(TypeError, match="image 0 is a str"):
        emb.embed_images(["a.jpg"])
    with pytest.raises(ValueError, match="batch_size"):
        emb.embed_images(_images([0]), batch_size=0)


# --- every registered embedder -----------------------------------------------------------------

# How to build a small instance of each registered embedder without downloads. A newly registered
# embedder fails test_smoke until it has an entry here (timm's registry-wide smoke test idea).
SMOKE = {
    "open_clip": lambda tiny_clip, resnet_ckpt: f"open_clip:{tiny_clip[0]}:{tiny_clip[1]}",
    "reference": lambda tiny_clip, resnet_ckpt: f"reference:{resnet_ckpt}",
}


@pytest.mark.parametrize("name", embedder_names())
def test_smoke(name, tiny_clip, resnet_ckpt):
    assert name in SMOKE, f"embedder {name!r} has no entry in tests/test_embedders.py SMOKE"
    emb = get_embedder(SMOKE[name](tiny_clip, resnet_ckpt), device="cpu")
    assert isinstance(emb, Embedder) and emb.name == name
    z = emb.embed_images(_images([0, 1, 2]), batch_size=2)
    assert z.shape == (3, emb.dim) and z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)
    d = emb.describe()
    assert d["kind"] == name and d["dim"] == emb.dim
    json.dumps(d)
    np.testing.assert_allclose(get_embedder(d["spec"]).embed_images(_images([0, 1, 2])), z, atol=1e-6)


# --- the trained reference encoder ----------------------------------------------------------


def test_reference_spec_validation():
    from jobs.reference_encoder import reference_spec

    spec = reference_spec("/data/synth")
    assert (spec.model, spec.seed, spec.dataset) == ("resnet_mini", 1, "/data/synth")
    assert reference_spec("/data/synth", seed=3, epochs=2).epochs == 2
    with pytest.raises(ValueError, match="not be built like the attacked model 'alexnet_mini'"):
        reference_spec("/data/synth", model="alexnet_mini")
    with pytest.raises(ValueError, match=r"unknown PretrainSpec field\(s\) \['epoch'\]; valid: .*epochs"):
        reference_spec("/data/synth", epoch=2)


def _class_gap(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine of same-class pairs (distinct images) minus that of different-class pairs."""
    c = z @ z.T
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    return float(c[same].mean() - c[labels[:, None] != labels[None]].mean())


@pytest.fixture
def one_thread():
    """Small training steps on a shared CPU: one thread avoids OpenMP oversubscription (10x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_trained_reference_separates_classes(tmp_path, resnet_ckpt, one_thread):
    """A briefly trained encoder puts same-class images closer than different-class ones, far more than random init."""
    from jobs.pretrain import run_pretrain
    from jobs.reference_encoder import reference_spec, train_reference_encoder

    data, store_uri = str(tmp_path / "data"), str(tmp_path / "store")
    synth.generate(data, classes=16, train_per_class=40, val_per_class=6, size=64, seed=2, shard_size=256)
    uri = train_reference_encoder(data, store_uri, epochs=4)
    again = run_pretrain(reference_spec(data, epochs=4), store_uri)
    assert again.reused and again.model_uri == uri  # stored by content key, not retrained

    labels = np.repeat(np.arange(16), 6)
    images = [synth.render(int(lab), 2, "val", i, size=64, classes=16) for i, lab in enumerate(labels)]
    trained = _class_gap(get_embedder(f"reference:{uri}").embed_images(images), labels)
    random_init = _class_gap(ReferenceEmbedder(resnet_ckpt).embed_images(images), labels)
    assert trained > 0.15 and trained > 2 * random_init, (trained, random_init)
