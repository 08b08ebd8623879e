"""The training stream's order is ours (numpy, seeded): executors, the cache and resume all give it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jobs import decoded_splits
from jobs.train_stream import TrainStream, decode_rows, epoch_order, epoch_windows, split_rows

CPU = torch.device("cpu")
ROWS = 44  # 4 classes x 11: 6 blocks of 8 (the last one short), shards of 13 (blocks span shards)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    from shared.synth import generate

    root = str(tmp_path_factory.mktemp("stream") / "data")
    generate(root, classes=4, train_per_class=11, val_per_class=1, size=40, seed=5, shard_size=13)
    return root


def _spec(data: str, **kw) -> SimpleNamespace:
    base = dict(dataset=data, train_split="train", model="alexnet_mini", seed=7, batch_size=6)
    return SimpleNamespace(**{**base, "block_rows": 8, "shuffle_buffer": 16, **kw})


def _batches(stream: TrainStream, epoch: int, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(stream.labelled(epoch, skip, CPU))


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))


def _truth(data: str) -> dict[str, np.ndarray]:
    """The split decoded in shard order, to name the rows a batch holds."""
    from shared.models.zoo import model_info

    return decode_rows(split_rows(data, "train"), 0, ROWS, model_info("alexnet_mini").preprocess)


def test_the_order_is_a_function_of_seed_and_epoch_and_covers_every_row_once(data):
    spec = _spec(data)
    stream = TrainStream(spec, ROWS, 0, executor="local")
    assert stream.cached is None and stream.executor == "local"
    first = _batches(stream, 0)
    assert _same(first, _batches(TrainStream(spec, ROWS, 0, executor="local"), 0))
    assert not _same(first, _batches(stream, 1))
    assert len(first) == ROWS // 6 and all(len(x) == 6 for x, _ in first)  # the last partial batch dropped

    truth = _truth(data)
    assert truth["ok"].all()
    order = epoch_order(epoch_windows(ROWS, 8, 16, spec.seed, 0))
    assert sorted(order.tolist()) == list(range(ROWS))
    got = torch.cat([x for x, _ in first])
    want = order[: len(got)]
    assert torch.equal(got, torch.from_numpy(truth["pixels"][want]))  # every row once, in the defined order
    assert torch.equal(torch.cat([y for _, y in first]), torch.from_numpy(truth["label"][want]))


def test_windows_permute_blocks_then_rows_within_a_window():
    windows = epoch_windows(44, 8, 16, 7, 0)
    assert [len(w.blocks) for w in windows] == [2, 2, 2]
    assert sorted(np.concatenate([w.blocks for w in windows]).tolist()) == list(range(6))
    for w in windows:  # a window holds its blocks' rows only
        assert set(w.rows.tolist()) == {r for b in w.blocks for r in range(b * 8, min(b * 8 + 8, 44))}
    assert [len(w.blocks) for w in epoch_windows(44, 8, 4, 7, 0)] == [1] * 6  # a buffer under a block


def test_cached_and_streamed_give_the_same_batches_and_skip_gives_the_tail(data):
    spec = _spec(data)
    streamed = TrainStream(spec, ROWS, 0, executor="local")
    cached = TrainStream(spec, ROWS, 2**30, executor="local")
    assert cached.cached is not None and streamed.cached is None
    for epoch in (0, 3):
        full = _batches(cached, epoch)
        assert _same(full, _batches(streamed, epoch))
        for skip in (1, 3, 5, 7):  # 3: mid-window (windows hold 16 rows, batches 6)
            assert _same(_batches(streamed, epoch, skip), full[skip:])
            assert _same(_batches(cached, epoch, skip), full[skip:])


@pytest.mark.parametrize("layout", ["webdataset", "folder"])
def test_shard_order_is_the_order_the_readers_yield(data, layout):
    from shared.datasets import iter_record_tables
    from shared.image_index import shard_order

    folder = f"{data}/{layout}"
    ids = [i for t in iter_record_tables(folder, "train") for i in t.column("image_id").to_pylist()]
    assert shard_order(folder, "train").column("image_id").to_pylist() == ids
    spec = _spec(folder)
    assert _same(
        _batches(TrainStream(spec, ROWS, 0, executor="local"), 2),
        _batches(TrainStream(spec, ROWS, 2**30, executor="local"), 2),
    )


def test_corrupt_images_drop_out_of_their_batch(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "bad" / "train").mkdir(parents=True)
    for i, shard in enumerate(sorted((Path(data) / "parquet" / "train").glob("*.parquet"))):
        t = pq.read_table(shard)
        if i == 1:  # rows 13 and 17 of the split
            images = t.column("image").to_pylist()
            for j in (0, 4):
                images[j] = {"bytes": b"not a jpeg", "path": images[j]["path"]}
            t = t.set_column(
                t.schema.get_field_index("image"), "image", pa.array(images, t.schema.field("image").type)
            )
        pq.write_table(t, tmp_path / "bad" / "train" / shard.name)
    spec = _spec(str(tmp_path / "bad"))
    order = epoch_order(epoch_windows(ROWS, 8, 16, spec.seed, 0))[: (ROWS // 6) * 6].reshape(-1, 6)
    want = [6 - int(np.isin(rows, [13, 17]).sum()) for rows in order]
    for cache in (0, 2**30):
        got = _batches(TrainStream(spec, ROWS, cache, executor="local"), 0)
        assert [len(x) for x, _ in got] == [len(y) for _, y in got] == want and sum(want) < 42


def test_bad_settings_are_named(data):
    with pytest.raises(ValueError, match="valid executors are auto, local, ray-data"):
        TrainStream(_spec(data), ROWS, 0, executor="spark")
    with pytest.raises(ValueError, match="has 44"):
        TrainStream(_spec(data), 40, 0)


@pytest.mark.slow
def test_ray_data_gives_the_local_batches(data, ray_local):
    spec = _spec(data, block_rows=5, shuffle_buffer=12)  # windows of 2 blocks, 9 blocks
    local = TrainStream(spec, ROWS, 0, executor="local")
    assert TrainStream(spec, ROWS, 0).executor == "local"  # one node: auto stays in this process
    ray_data = TrainStream(spec, ROWS, 0, executor="ray-data")
    decoded_splits.forget()  # a split kept by an earlier test would be taken instead of decoded on Ray Data
    ray_cached = TrainStream(spec, ROWS, 2**30, executor="ray-data")
    assert ray_cached.cached is not None
    full = _batches(local, 1)
    assert _same(_batches(ray_data, 1), full) and _same(_batches(ray_cached, 1), full)
    assert _same(_batches(ray_data, 1, 4), full[4:])


def test_a_second_stream_takes_the_split_this_process_decoded(data, monkeypatch):
    """jobs.decoded_splits: the next trial in the same actor does not decode its train split again."""
    decoded_splits.forget()
    first = TrainStream(_spec(data), ROWS, 2**30, executor="local")
    kept = decoded_splits.find(data, "train", first.pre)
    assert (
        kept is not None
        and list(kept.arrays["image_id"]) == split_rows(data, "train").index.column("image_id").to_pylist()
    )

    def no_decode(self):
        raise AssertionError("decoded the split again")

    monkeypatch.setattr(TrainStream, "_decode_all", no_decode)
    again = TrainStream(_spec(data, seed=8), ROWS, 2**30, executor="local")
    assert again.cached["pixels"] is first.cached["pixels"]
    assert _same(_batches(again, 0), _batches(TrainStream(_spec(data, seed=8), ROWS, 0, executor="local"), 0))
    from shared.datasets import Preprocess

    assert decoded_splits.find(data, "val", first.pre) is None  # another split, another preprocessing: none
    assert decoded_splits.find(data, "train", Preprocess(resize=48, crop=32)) is None
    decoded_splits.forget()
