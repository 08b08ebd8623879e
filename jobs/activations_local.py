"""The local executor of the activations job: one process streams the whole split.

On one node a plain streaming loop beats Ray Data, whose fixed cost (worker
processes, each importing torch and loading the model) outweighs the work on
small splits and whose actor pool splits the cores into single-threaded
forwards on large ones (benchmarks/activations.py). Three threads pipeline
the work so each stage overlaps the others:

  reader thread: shards -> batches of ``batch_size`` -> decode + preprocess (one thread on CPU,
                 where the forward takes the cores; a pool that feeds the GPU when there is one)
  calling thread: forward with the unit-score hooks (all intra-op threads; GPU when present)
  writer thread:  one Parquet part per batch and layer

When this process holds the split decoded already (a trial's train split: jobs.decoded_splits),
the reader hands on its batches instead of reading and decoding the shards again.

PIL's decode and resize, torch's kernels and Parquet's encoder all release
the GIL, so the threads run in parallel. Decode, forward and part writing are
``jobs.activation_parts``, the same functions the Ray Data executor calls.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from jobs import activation_parts as parts
from jobs import decoded_splits
from shared.progress import Progress

_DEPTH = 2  # batches queued between stages: enough to hide jitter, little memory
_END = object()  # end-of-stream marker between stages


def record_batches(dataset: str, split: str, batch_size: int, limit: int | None) -> Iterator[pa.Table]:
    """The split's records in shard order, re-cut into tables of ``batch_size`` rows (the first ``limit``)."""
    from shared.datasets import iter_record_tables

    pending: list[pa.Table] = []
    have, left = 0, limit
    for t in iter_record_tables(dataset, split):
        if left is not None:
            t = t.slice(0, left)
            left -= t.num_rows
        pending.append(t)
        have += t.num_rows
        while have >= batch_size:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, batch_size)
            rest = whole.slice(batch_size)
            pending, have = [rest], rest.num_rows
        if left == 0:
            break
    if have:
        yield pa.concat_tables(pending)


def decode_threads(device_type: str) -> int:
    """One decode thread beside a CPU forward (measured fastest on 2 cores); up to 8 to feed a GPU."""
    if device_type == "cpu":
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) - 1))


def encoded(t: pa.Table) -> dict[str, Any]:
    """A record table as the columns ``decode`` takes."""
    return {
        "image_id": np.asarray(t.column("image_id").to_pylist(), dtype=object),
        "label": t.column("label").to_numpy(),
        "image": t.column("image").to_pylist(),
    }


class _Pipe:
    """Bounded hand-off between two threads that gives up when any stage has failed."""

    def __init__(self, stop: threading.Event) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=_DEPTH)
        self.stop = stop

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while not self.stop.is_set():
            try:
                return self.q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END


class _Stage(threading.Thread):
    """A pipeline thread: runs ``fn``; an error stops the pipeline and is re-raised by :meth:`finish`."""

    def __init__(self, name: str, fn: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=f"activations-{name}", daemon=True)
        self.fn, self.stop, self.error = fn, stop, None

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as e:  # handed to the calling thread
            self.error = e
            self.stop.set()

    def finish(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


def run_local(spec, pre, dirs: dict[str, str], attempt: str, total: int | None, progress: Progress) -> dict:
    """Compute the parts of ``dirs``' tables in this process; returns the merged :func:`write_block` results."""
    from shared.device import pick_device

    stop = threading.Event()
    decoded, scored = _Pipe(stop), _Pipe(stop)
    result = parts.empty_result(dirs)
    seen = [0]

    device = pick_device(spec.device)
    workers = decode_threads(device.type)

    kept = decoded_splits.find(spec.dataset, spec.split, pre)

    def read() -> None:
        if kept is not None:  # decoded already by this process's trial (jobs.decoded_splits)
            for batch in kept.batches(spec.batch_size, spec.limit):
                if stop.is_set():
                    return
                decoded.put(batch)
            decoded.put(_END)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="activations-decode") as pool:
            ahead: deque = deque()  # decodes in flight, handed on in order
            for t in record_batches(spec.dataset, spec.split, spec.batch_size, spec.limit):
                if stop.is_set():
                    return
                ahead.append(pool.submit(parts.decode, encoded(t), pre))
                if len(ahead) > workers:
                    decoded.put(ahead.popleft().result())
            while ahead and not stop.is_set():
                decoded.put(ahead.popleft().result())
        decoded.put(_END)

    def write() -> None:
        i = 0
        while (table := scored.get()) is not _END:
            # task/block split keeps the names in row order past 10^4 parts
            r = parts.write_block(table, dirs, parts.part_name(attempt, i // 10_000, i % 10_000))
            parts.merge(result, r)
            seen[0] += r["rows"] + r["corrupt"]
            i += 1

    reader, writer = _Stage("read", read, stop), _Stage("write", write, stop)
    reader.start()  # decoding starts while the model loads
    writer.start()
    try:
        net, device = parts.load_model(spec.model, spec.weights, str(device))
        layers = tuple(dirs)
        while (batch := decoded.get()) is not _END:
            scored.put(parts.score_batch(net, spec.model, layers, device, spec.amp, batch))
            progress(seen[0], total, phase="activations")
        scored.put(_END)
    except BaseException:
        stop.set()
        raise
    finally:
        if stop.is_set():  # a stage failed (or this thread did): wake the others, then report
            reader.join()
            writer.join()
    reader.finish()
    writer.finish()
    progress(seen[0], total, phase="activations")
    return result
