"""Training batches in an order that our code defines as a function of (seed, epoch) only.

Shared by the attack loop (pixels only: its losses need no labels) and the pruning job's
fine-tuning (pixels and labels): neither holds the split in memory unless it fits the cache,
so both run at ImageNet scale. A resumed run starts at its batch without training: the order
is computed, not replayed, so there is no shuffle state to save.

Order of epoch ``e`` (every executor and the cache give exactly this sequence):

1. the split's rows in shard order (:func:`shared.image_index.shard_order`), cut into
   blocks of ``block_rows`` rows (the last one may be short);
2. ``rng = np.random.default_rng(mix_seed(seed, e))``; the blocks are permuted by
   ``rng.permutation``;
3. consecutive permuted blocks form windows of ``max(1, shuffle_buffer // block_rows)``
   blocks; each window's rows (in block order) are permuted by ``rng.permutation``, window
   after window with the same ``rng``;
4. batches of ``batch_size`` rows are cut across windows; the last partial batch is dropped;
   corrupt images (``ok`` False) drop out of their batch.

Executors: ``local`` reads blocks by index rows (row groups, tar byte ranges or files) and
decodes them on a small thread pool in this process (PIL releases the GIL), no Ray at all:
Ray Data's first use costs ~9 s per process, more than a trial's training steps on one node.
``ray-data`` decodes the same blocks, in the same order, on a multi-node cluster
(``preserve_order``). ``auto`` asks :func:`jobs.activations.choose_executor`. When the decoded
split fits ``cache_bytes`` it is decoded once and kept in memory; it is indexed by the same
order, so the cache is an execution setting, not part of the result.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from shared.attacks import mix_seed
from shared.models.zoo import model_info

EXECUTORS = ("auto", "local", "ray-data")
_CHUNK_ROWS = 64  # rows per decode task when the cache is filled


class StreamSettings(Protocol):
    """What decides the stream (``jobs.attack.AttackSpec`` and ``jobs.prune.PruneSpec`` have these)."""

    dataset: str
    train_split: str
    model: str
    seed: int
    batch_size: int
    block_rows: int
    shuffle_buffer: int


@dataclass(frozen=True)
class Window:
    """Consecutive permuted blocks; ``rows[perm]`` is the window's part of the epoch order."""

    blocks: np.ndarray  # block numbers, in read order
    rows: np.ndarray  # split positions of their rows, in block order
    perm: np.ndarray  # the in-window permutation


def epoch_windows(rows: int, block_rows: int, shuffle_buffer: int, seed: int, epoch: int) -> list[Window]:
    """The windows of an epoch (module docstring, steps 1-3)."""
    rng = np.random.default_rng(mix_seed(seed, epoch))
    blocks = rng.permutation(-(-rows // block_rows))
    per = max(1, shuffle_buffer // block_rows)
    out = []
    for i in range(0, len(blocks), per):
        group = blocks[i : i + per]
        pos = np.concatenate([np.arange(b * block_rows, min((b + 1) * block_rows, rows)) for b in group])
        out.append(Window(group, pos, rng.permutation(len(pos))))
    return out


def epoch_order(windows: list[Window]) -> np.ndarray:
    """Split positions in the epoch's order (before batching)."""
    return np.concatenate([w.rows[w.perm] for w in windows]) if windows else np.zeros(0, np.int64)


# --- reading and decoding rows (both executors) -------------------------------------------


@dataclass(frozen=True)
class SplitRows:
    """A split's index rows in shard order, and where to read them from."""

    root: str
    layout: str
    index: pa.Table


@lru_cache(maxsize=2)
def split_rows(dataset: str, split: str) -> SplitRows:
    """The split's rows in shard order (read once per process: Ray workers keep theirs too)."""
    from shared import store
    from shared.datasets import detect_layout
    from shared.image_index import shard_order

    root = store.normalize(dataset)
    layout = detect_layout(root)
    return SplitRows(root, layout, shard_order(root, split, layout))


def decode_rows(split: SplitRows, start: int, stop: int, pre) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` (shard order) decoded: pos, pixels, label, ok (bad images: ok False)."""
    from shared.datasets import decode_batch
    from shared.image_index import read_entries

    entries = split.index.slice(start, stop - start).to_pylist()
    data = read_entries(split.root, split.layout, entries)
    ids = [e["image_id"] for e in entries]
    labels = np.asarray([e["label"] for e in entries], np.int64)
    out = decode_batch(
        {"image_id": np.asarray(ids, object), "label": labels, "image": [data[i] for i in ids]}, pre
    )
    return {"pos": np.arange(start, stop), "pixels": out["pixels"], "label": out["label"], "ok": out["ok"]}


def _ray_decode(batch: dict, dataset: str, split: str, block_rows: int, rows: int, pre, s3: Any) -> dict:
    """Ray Data task: one block descriptor -> its decoded rows."""
    from shared import store

    store.configure(s3)  # the driver's S3 settings: env set after ray.init never reaches workers
    b = int(batch["block"][0])
    return decode_rows(split_rows(dataset, split), b * block_rows, min((b + 1) * block_rows, rows), pre)


class _Rows:
    """Decoded rows handed on in order and taken out ``n`` at a time, whatever their chunking."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []
        self.n = 0

    def put(self, part: dict[str, np.ndarray]) -> None:
        if len(part["ok"]):
            self.parts.append(part)
            self.n += len(part["ok"])

    def take(self, n: int) -> dict[str, np.ndarray]:
        """The next ``n`` rows (there must be that many): copies those rows only, not the rest."""
        got: list[dict[str, np.ndarray]] = []
        need = n
        while need:
            part = self.parts[0]
            m = len(part["ok"])
            if m <= need:
                got.append(self.parts.pop(0))
                need -= m
            else:
                got.append({k: v[:need] for k, v in part.items()})
                self.parts[0] = {k: v[need:] for k, v in part.items()}
                need = 0
        self.n -= n
        return got[0] if len(got) == 1 else {k: np.concatenate([g[k] for g in got]) for k in got[0]}


def _fill(out: dict[str, np.ndarray], parts) -> None:
    for part in parts:
        for k in out:
            out[k][part["pos"]] = part[k]


def _threads(device_type: str) -> int:
    """One decode thread beside a CPU training step (it takes the cores); up to 8 to feed a GPU."""
    return 1 if device_type == "cpu" else max(1, min(8, len(os.sched_getaffinity(0)) - 1))


class TrainStream:
    """The training batches of every epoch, in the order of the module docstring."""

    def __init__(self, spec: StreamSettings, rows: int, cache_bytes: int, executor: str = "auto") -> None:
        from jobs.activations import choose_executor

        if executor not in EXECUTORS:
            raise ValueError(f"TrainStream executor={executor!r}: valid executors are {', '.join(EXECUTORS)}")
        self.spec = spec
        self.rows = rows  # images in the split (from its index)
        self.pre = model_info(spec.model).preprocess
        self.executor = choose_executor(executor)
        self.split = split_rows(spec.dataset, spec.train_split)
        if self.split.index.num_rows != rows:
            raise ValueError(
                f"TrainStream rows={rows}, but the index of split {spec.train_split!r} of {spec.dataset} "
                f"has {self.split.index.num_rows}: pass the index's row count (jobs.attack_data.split_index)"
            )
        self.cached: dict[str, np.ndarray] | None = None  # the decoded split, in shard order
        if rows * 3 * self.pre.crop**2 * 4 <= cache_bytes:
            self.cached = self._kept_or_decoded()

    def _kept_or_decoded(self) -> dict[str, np.ndarray]:
        """The split this process decoded already (jobs.decoded_splits), else decoded now and kept."""
        from jobs import decoded_splits

        split, pre = self.spec.train_split, self.pre
        kept = decoded_splits.find(self.spec.dataset, split, pre)
        if kept is not None and len(kept.arrays["ok"]) == self.rows:
            return {k: kept.arrays[k] for k in ("pixels", "label", "ok")}
        decoded_splits.forget()
        out = self._decode_all()
        ids = np.asarray(self.split.index.column("image_id").to_pylist(), dtype=object)
        decoded_splits.keep(self.spec.dataset, split, pre, {**out, "image_id": ids})
        return out

    # --- the two executors ----------------------------------------------------------------

    def _decode_all(self) -> dict[str, np.ndarray]:
        c = self.pre.crop
        out = {
            "pixels": np.empty((self.rows, 3, c, c), np.float32),
            "label": np.empty(self.rows, np.int64),
            "ok": np.empty(self.rows, bool),
        }
        if self.executor == "ray-data":
            _fill(out, self._ray_blocks(np.arange(-(-self.rows // self.spec.block_rows))))
            return out
        cuts = range(0, self.rows, _CHUNK_ROWS)
        with ThreadPoolExecutor(max(1, min(8, len(os.sched_getaffinity(0)))), "train-stream-cache") as pool:
            # nothing else runs yet: every core decodes
            _fill(
                out,
                pool.map(
                    lambda a: decode_rows(self.split, a, min(a + _CHUNK_ROWS, self.rows), self.pre), cuts
                ),
            )
        return out

    def _local_blocks(self, blocks: np.ndarray, device_type: str) -> Iterator[dict[str, np.ndarray]]:
        """Decoded blocks in the given order, a few decoding ahead on a thread pool."""
        b_rows, threads = self.spec.block_rows, _threads(device_type)
        ahead_max = max(1, self.spec.shuffle_buffer // b_rows) + threads  # the next window, decoding
        pool = ThreadPoolExecutor(threads, "train-stream-decode")
        ahead: deque = deque()
        try:
            for b in blocks:
                start, stop = int(b) * b_rows, min((int(b) + 1) * b_rows, self.rows)
                ahead.append(pool.submit(decode_rows, self.split, start, stop, self.pre))
                if len(ahead) > ahead_max:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # a consumer that stops early (a report's stop) leaves no decode running
            pool.shutdown(wait=True, cancel_futures=True)

    def _ray_blocks(self, blocks: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        """The same decoded rows from a Ray Data pipeline over block descriptors, order preserved."""
        import ray.data

        from shared import store

        items = ray.data.from_items([{"block": int(b)} for b in blocks], override_num_blocks=len(blocks))
        kw = dict(dataset=self.spec.dataset, split=self.spec.train_split, block_rows=self.spec.block_rows)
        kw |= dict(rows=self.rows, pre=self.pre, s3=store.current_s3())
        ds = items.map_batches(_ray_decode, fn_kwargs=kw, batch_size=1, batch_format="numpy")
        ds.context.execution_options.preserve_order = True  # the dataset's own copy of the context
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")

    # --- batches ----------------------------------------------------------------------------

    def _windows(self, windows: list[Window], device_type: str) -> Iterator[dict[str, np.ndarray]]:
        """Each window's decoded rows in block order (checked against the plan)."""
        blocks = np.concatenate([w.blocks for w in windows])
        if self.executor == "ray-data":
            decoded = self._ray_blocks(blocks)
        else:
            decoded = self._local_blocks(blocks, device_type)
        buf = _Rows()
        for w in windows:
            while buf.n < len(w.rows):
                part = next(decoded, None)
                if part is None:
                    raise RuntimeError(f"the {self.executor} executor ended before window {w.blocks} (bug)")
                buf.put(part)
            rows = buf.take(len(w.rows))
            if not np.array_equal(rows["pos"], w.rows):
                raise RuntimeError(f"the {self.executor} executor reordered the stream's blocks (bug)")
            yield rows

    def _batches(self, epoch: int, skip: int, device_type: str) -> Iterator[dict[str, np.ndarray]]:
        bs = self.spec.batch_size
        n = self.rows // bs  # the last partial batch is dropped
        s = self.spec
        windows = epoch_windows(self.rows, s.block_rows, s.shuffle_buffer, s.seed, epoch)
        if skip >= n:
            return
        if self.cached is not None:
            order = epoch_order(windows)
            for i in range(skip, n):
                yield {k: v[order[i * bs : (i + 1) * bs]] for k, v in self.cached.items()}
            return
        ends = np.cumsum([len(w.rows) for w in windows])
        first = int(np.searchsorted(ends, skip * bs, side="right"))  # the window of the first batch
        drop = skip * bs - (int(ends[first - 1]) if first else 0)
        buf, left = _Rows(), n - skip
        for w, rows in zip(windows[first:], self._windows(windows[first:], device_type)):
            buf.put({k: v[w.perm[drop:]] for k, v in rows.items()})
            drop = 0
            while buf.n >= bs and left:
                yield buf.take(bs)
                left -= 1
            if not left:
                return

    def epoch(self, epoch: int, skip: int, device: torch.device) -> Iterator[torch.Tensor]:
        """Pixel batches of ``epoch`` from batch ``skip`` on."""
        for pixels, _ in self.labelled(epoch, skip, device):
            yield pixels

    def labelled(
        self, epoch: int, skip: int, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(pixels, labels) batches of ``epoch`` from batch ``skip`` on; corrupt images drop out."""
        for batch in self._batches(epoch, skip, torch.device(device).type):
            ok = batch["ok"]
            pixels, labels = batch["pixels"], batch["label"]
            if not ok.all():
                pixels, labels = pixels[ok], labels[ok]
            yield (
                torch.from_numpy(np.ascontiguousarray(pixels)).to(device),
                torch.from_numpy(labels).to(device),
            )
