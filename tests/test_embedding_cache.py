"""jobs.embedding_cache: e(x) kept by image id in the store, so θ0's top-k images are embedded once
per variant (phase 2) and not again by every trial; a cache hit never changes a result."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jobs.embedding_cache import cache_uri, embed_cached
from jobs.metrics_inputs import embed_ids
from shared import store
from shared.embedders import get_embedder
from shared.models.zoo import build_model, load_checkpoint, save_checkpoint
from shared.synth import generate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embcache")
    data = str(root / "data")
    generate(data, classes=16, train_per_class=4, val_per_class=4, size=48, seed=7, shard_size=40)
    refs = []
    for seed in (2, 3):
        torch.manual_seed(seed)
        ref, _ = build_model("resnet_mini")
        refs.append(f"reference:{save_checkpoint(ref, 'resnet_mini', str(root / f'ref{seed}.pt'))}")
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    init = save_checkpoint(model, "alexnet_mini", str(root / "init.pt"))
    return {"root": root, "data": data, "refs": refs, "init": init}


def _ids(setup, split: str, n: int) -> list[str]:
    from jobs.attack_data import split_index

    return [str(i) for i in split_index(setup["data"], split)[0][:n]]


def _counting(embedder, seen: list[int]):
    real = embedder.embed_images

    def embed_images(images, batch_size=64):
        seen.append(len(images))
        return real(images, batch_size=batch_size)

    embedder.embed_images = embed_images
    return embedder


def test_a_second_call_embeds_only_the_new_ids_and_gives_the_same_vectors(setup, tmp_path):
    seen: list[int] = []
    emb = _counting(get_embedder(setup["refs"][0], device="cpu"), seen)
    ids = _ids(setup, "train", 40)
    first = embed_cached(emb, setup["data"], "train", ids[:30], str(tmp_path))
    second = embed_cached(emb, setup["data"], "train", ids[10:], str(tmp_path))
    assert seen == [30, 10]  # 20 of the second call's 30 ids came from the store
    direct = embed_ids(get_embedder(setup["refs"][0], device="cpu"), setup["data"], "train", ids)
    for i in ids[:30]:
        assert np.array_equal(first[i], direct[i])
    for i in ids[10:]:
        assert np.array_equal(second[i], direct[i])
    parts = [f for f in store.listdir(cache_uri(str(tmp_path), emb, setup["data"], "train"))]
    assert len(parts) == 2 and all(f.rsplit("/", 1)[-1].startswith("part-") for f in parts)
    assert sorted(pq.read_table(store.local_path(parts[0])).column_names) == ["embedding", "image_id"]


def test_a_damaged_part_is_embedded_again_and_another_encoder_never_hits(setup, tmp_path):
    seen: list[int] = []
    emb = _counting(get_embedder(setup["refs"][0], device="cpu"), seen)
    ids = _ids(setup, "val", 20)
    good = embed_cached(emb, setup["data"], "val", ids, str(tmp_path))
    (part,) = store.listdir(cache_uri(str(tmp_path), emb, setup["data"], "val"))
    path = store.local_path(part)
    with open(path, "r+b") as f:  # a truncated file, as a disk error leaves it
        f.truncate(100)
    again = embed_cached(emb, setup["data"], "val", ids, str(tmp_path))
    assert seen == [20, 20] and all(np.array_equal(good[i], again[i]) for i in ids)
    other = _counting(get_embedder(setup["refs"][1], device="cpu"), seen)
    assert cache_uri(str(tmp_path), other, setup["data"], "val") != cache_uri(
        str(tmp_path), emb, setup["data"], "val"
    )
    embed_cached(other, setup["data"], "val", ids, str(tmp_path))
    assert seen == [20, 20, 20]


@pytest.mark.slow
def test_phase_two_fills_the_cache_and_the_metrics_do_not_change(setup, ray_local, monkeypatch):
    """θ0's top-k images embedded before the trial: the metrics stage embeds only θ's new ones, and
    its unit metrics are those of a store without the cache, value for value."""
    import jobs.embedding_cache
    from jobs.activations import variant_tables
    from jobs.metrics import MetricsSpec, initial_embeddings, read_unit_metrics, run_metrics

    model, _ = load_checkpoint(setup["init"])
    with torch.no_grad():  # θ: conv5 moved, so its top-k sets differ from θ0's in part
        for name, p in model.named_parameters():
            if name.startswith("features.10"):
                p.add_(0.3 * p.std() * torch.randn(p.shape, generator=torch.Generator().manual_seed(4)))
    final = save_checkpoint(model, "alexnet_mini", str(setup["root"] / "final.pt"))
    layers, splits = ("conv5",), ("train", "val")
    real = jobs.embedding_cache.embed_ids
    out = {}
    for name, prefill in (("plain", False), ("cached", True)):
        root = str(setup["root"] / name)
        variant_tables(setup["data"], splits, "alexnet_mini", setup["init"], "v0", layers, root)
        if prefill:
            n = initial_embeddings(setup["data"], "alexnet_mini", setup["init"], "v0", layers, splits, 10,
                                   setup["refs"][0], root, device="cpu")  # fmt: skip
            assert n > 0
        seen: list[int] = []
        monkeypatch.setattr(jobs.embedding_cache, "embed_ids", _counted(real, seen))
        spec = MetricsSpec(dataset=setup["data"], model="alexnet_mini", variant_key="v0", init_weights=setup["init"],
                           final_weights=final, final_state_key="moved", layers=layers, embedder=setup["refs"][0],
                           batch_size=32, device="cpu", num_actors=1, picture_units=0)  # fmt: skip
        res = run_metrics(spec, root, pictures=False)
        out[name] = (seen, {sp: read_unit_metrics(res.per[("conv5", sp)].uri) for sp in splits})
    plain_seen, plain = out["plain"]
    cached_seen, cached = out["cached"]
    assert sum(cached_seen) < sum(plain_seen) // 2  # only θ's top-k images that θ0's lacked
    for sp in splits:
        assert plain[sp].column_names == cached[sp].column_names
        for col in plain[sp].column_names:  # NaN (a dead unit's τ) equals NaN here
            np.testing.assert_array_equal(plain[sp].column(col).to_numpy(), cached[sp].column(col).to_numpy())
        assert np.ptp(cached[sp].column("clip_delta").to_numpy()) > 0  # θ moved some units' top-k


def _counted(real, seen: list[int]):
    def embed_ids(embedder, dataset, split, ids, *args, **kwargs):
        seen.append(len(ids))
        return real(embedder, dataset, split, ids, *args, **kwargs)

    return embed_ids
