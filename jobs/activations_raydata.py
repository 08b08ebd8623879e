"""The Ray Data executor of the activations job: for jobs that span nodes.

shards -> decode + preprocess (CPU tasks) -> forward with unit-score hooks
(actor pool; GPU actors when the cluster has GPUs) -> one Parquet part per block
and layer. Decode, forward and part writing are ``jobs.activation_parts``, shared
with the local executor.
"""

from __future__ import annotations

import threading

import pyarrow as pa
from ray.data import Datasink

from jobs import activation_parts as parts
from shared import store
from shared.progress import Progress


class _Scorer:
    """Actor: holds the model, turns pixel batches (or encoded ones, on CPU-only pipelines) into score rows."""

    def __init__(
        self,
        model: str,
        weights: str,
        layers: tuple[str, ...],
        device: str,
        amp: bool,
        threads: int,
        s3,
        pre=None,
    ):
        import torch

        store.configure(s3)  # weights may live on the driver's S3
        torch.set_num_threads(max(1, threads))
        self.net, self.device = parts.load_model(model, weights, device)
        self.model_name, self.layers, self.amp, self.pre = model, layers, amp, pre

    def __call__(self, batch: dict) -> pa.Table:
        if "pixels" not in batch:  # CPU-only pipelines decode inside the actor
            batch = parts.decode(batch, self.pre)
        return parts.score_batch(self.net, self.model_name, self.layers, self.device, self.amp, batch)


class LayerTablesSink(Datasink):
    """Writes one Parquet part per block and layer; the driver commits manifests afterwards."""

    def __init__(self, dirs: dict[str, str], attempt: str, counter=None):
        self.dirs, self.attempt, self.counter = dirs, attempt, counter
        self.s3 = store.current_s3()  # the driver's S3 settings travel with the sink to the workers
        self.result: dict | None = None

    def write(self, blocks, ctx) -> dict:
        store.configure(self.s3)
        out = parts.empty_result(self.dirs)
        for i, block in enumerate(blocks):
            table: pa.Table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            r = parts.write_block(table, self.dirs, parts.part_name(self.attempt, ctx.task_idx, i))
            parts.merge(out, r)
            if self.counter is not None and table.num_rows:
                self.counter.add.remote(r["rows"] + r["corrupt"])
        return out

    def on_write_complete(self, write_result) -> None:
        merged = parts.empty_result(self.dirs)
        for r in write_result.write_returns:
            parts.merge(merged, r)
        self.result = merged


def _counter_actor():
    import ray

    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> None:
            self.n += k

        def get(self) -> int:
            return self.n

    return Counter.remote()


def run_ray_data(
    spec, pre, dirs: dict[str, str], attempt: str, total: int | None, progress: Progress
) -> dict:
    """Compute the parts of ``dirs``' tables on Ray Data; returns the merged :func:`write_block` results."""
    import ray

    from jobs.raysetup import cpu_actor_pool, free_gpus
    from shared.datasets import read_records

    gpus = free_gpus()
    ds = read_records(spec.dataset, spec.split)
    if spec.limit is not None:
        ds = ds.limit(spec.limit)
    scorer_args = {
        "model": spec.model,
        "weights": spec.weights,
        "layers": tuple(dirs),
        "device": spec.device,
        "amp": spec.amp,
        "s3": store.current_s3(),
    }
    if gpus >= 1:
        # GPU nodes: decode on CPU tasks, forward on one GPU actor each; different resources keep
        # the two stages apart (Ray fuses stages with equal resources).
        ds = ds.map_batches(
            parts.decode,
            fn_kwargs={"pre": pre},
            batch_format="numpy",
            batch_size=spec.batch_size,
            num_cpus=1,
        )
        ds = ds.map_batches(
            _Scorer,
            fn_constructor_kwargs={**scorer_args, "threads": 2, "pre": None},
            compute=ray.data.ActorPoolStrategy(size=spec.num_actors or int(gpus)),
            batch_size=spec.batch_size,
            batch_format="numpy",
            num_gpus=1,
            num_cpus=1,
        )
    else:
        n_actors, cpus_each = cpu_actor_pool()
        # CPU-only: a separate decode stage would only compete with the forward pass for the same
        # cores and add a hand-off; each single-threaded actor decodes its own batches instead.
        ds = ds.map_batches(
            _Scorer,
            fn_constructor_kwargs={**scorer_args, "threads": 1, "pre": pre},
            compute=ray.data.ActorPoolStrategy(size=spec.num_actors or n_actors),
            batch_size=spec.batch_size,
            batch_format="numpy",
            # Half a CPU each: whole CPUs for every actor would leave none for the read and
            # write tasks, and the pipeline would stall.
            num_cpus=cpus_each,
        )
    counter = _counter_actor()
    try:
        sink = LayerTablesSink(dirs, attempt, counter)
        _write_with_progress(ds, sink, counter, total, progress)
        return sink.result
    finally:
        ray.kill(counter)


def _write_with_progress(ds, sink, counter, total: int | None, progress: Progress) -> None:
    import ray

    err: list[BaseException] = []

    def target() -> None:
        try:
            ds.write_datasink(sink)
        except BaseException as e:  # re-raised on the caller's thread
            err.append(e)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    while th.is_alive():
        th.join(timeout=0.5)
        progress(ray.get(counter.get.remote()), total, phase="activations")
    if err:
        raise err[0]
    progress(ray.get(counter.get.remote()), total, phase="activations")
