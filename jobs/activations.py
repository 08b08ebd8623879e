"""Activation tables on Ray Data (ARCHITECTURE.md, phase 2).

shards -> decode + preprocess (CPU tasks) -> forward with unit-score hooks
(actor pool; GPU actors when the cluster has GPUs) -> one Parquet table per
layer, committed by its manifest.

Layout: ``{store}/activations/model={variant}/layer={layer}/state={state}/split={split}/``
with ``part-*.parquet`` and ``_MANIFEST.json``. Parts carry an attempt id in
their names and readers only read the files a manifest names, so a killed
write leaves no manifest and its stale parts are never read (they are swept
on the next attempt).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from shared import integrity, store
from shared.progress import Progress, no_progress

CODE_VERSION = "activations-v1"
SCORES = "scores"


@dataclass(frozen=True)
class ActivationsSpec:
    """What determines an activation table (everything here goes into its content key)."""

    dataset: str  # dataset root URI (any of the three layouts)
    split: str  # "train" or "val"
    model: str  # registered model name, e.g. "alexnet_mini"
    weights: str  # checkpoint URI, or a torchvision weights name
    variant_key: str  # content key of the model variant (base, or pruned+fine-tuned)
    layers: tuple[str, ...]  # layer aliases to record
    state_key: str = "init"  # "init" for the variant itself, else the attacked state's key
    limit: int | None = None  # record only the first N images (e.g. a D_tau subset)
    # Execution settings: they do not change the result, so they stay out of the key.
    batch_size: int = field(default=256, compare=False)
    num_actors: int | None = field(default=None, compare=False)  # None: one per GPU, else 1
    device: str = field(default="auto", compare=False)
    amp: bool = field(default=False, compare=False)

    def key(self, dataset_id: str, layer: str) -> str:
        """One layer's table key: tables are per layer, so other layers computed alongside do not matter."""
        skip = {"batch_size", "num_actors", "device", "amp", "layers"}
        ident = {k: v for k, v in asdict(self).items() if k not in skip}
        return store.content_key(ident, layer, dataset_id, CODE_VERSION)


@dataclass
class ActivationsResult:
    tables: dict[str, str]  # layer -> table folder URI
    rows: int
    corrupt: int
    corrupt_ids: list[str]
    skipped: bool  # True when every table was already committed
    seconds: float


def table_uri(store_uri: str, variant_key: str, layer: str, state_key: str, split: str) -> str:
    return store.join(
        store_uri,
        "activations",
        f"model={variant_key}",
        f"layer={layer}",
        f"state={state_key}",
        f"split={split}",
    )


# --- pipeline pieces (run inside Ray workers) ------------------------------------


def _decode(batch: dict, pre) -> dict:
    from shared.datasets import decode_batch

    return decode_batch(batch, pre)


class _Scorer:
    """Actor: holds the model and the hooks, turns pixel batches into score rows."""

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

        from shared.device import pick_device
        from shared.hooks import UnitScores
        from shared.models.zoo import build_model

        store.configure(s3)  # weights may live on the driver's S3
        torch.set_num_threads(max(1, threads))
        self.device = pick_device(device)
        self.model, _ = build_model(model, weights=weights)
        self.model.eval().to(self.device)
        self.model_name, self.layers, self.amp, self.pre = model, layers, amp, pre
        self._hooks = UnitScores

    def __call__(self, batch: dict) -> pa.Table:
        import torch

        from shared.device import autocast

        if "pixels" not in batch:  # CPU-only pipelines decode inside the actor
            batch = _decode(batch, self.pre)
        ok = np.asarray(batch["ok"], dtype=bool)
        n = len(ok)
        cols: dict[str, pa.Array] = {
            "image_id": pa.array(np.asarray(batch["image_id"]).astype(str), pa.string()),
            "label": pa.array(np.asarray(batch["label"], dtype=np.int64)),
            "ok": pa.array(ok),
        }
        pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])).to(self.device)
        scores: dict[str, np.ndarray] = {}
        if len(pixels):
            with torch.inference_mode(), autocast(self.device, self.amp):
                with self._hooks(self.model, self.model_name, list(self.layers)) as rec:
                    self.model(pixels)
                scores = {k: v.float().cpu().numpy() for k, v in rec.scores.items()}
        for layer in self.layers:
            j = scores[layer].shape[1] if layer in scores else 0
            full = np.zeros((n, j), dtype=np.float32)
            if layer in scores:
                full[ok] = scores[layer]
            flat = pa.array(full.reshape(-1), pa.float32())
            cols[f"{SCORES}.{layer}"] = pa.FixedSizeListArray.from_arrays(flat, j) if j else pa.nulls(n)
        return pa.table(cols)


class LayerTablesSink(Datasink):
    """Writes one Parquet part per block and layer; the driver commits manifests afterwards."""

    def __init__(self, dirs: dict[str, str], attempt: str, counter=None):
        self.dirs, self.attempt, self.counter = dirs, attempt, counter
        self.s3 = store.current_s3()  # the driver's S3 settings travel with the sink to the workers
        self.result: dict | None = None

    def write(self, blocks, ctx) -> dict:
        store.configure(self.s3)
        files: dict[str, list[tuple[str, int, dict]]] = {layer: [] for layer in self.dirs}
        rows = corrupt = 0
        corrupt_ids: list[str] = []
        for i, block in enumerate(blocks):
            table: pa.Table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            if table.num_rows == 0:
                continue
            ok = table.column("ok").to_numpy(zero_copy_only=False)
            if not ok.all():
                bad = table.filter(pa.array(~ok))
                corrupt += bad.num_rows
                corrupt_ids.extend(bad.column("image_id").to_pylist()[:100])
                table = table.filter(pa.array(ok))
            rows += table.num_rows
            name = f"part-{self.attempt}-{ctx.task_idx:05d}-{i:04d}.parquet"
            for layer, dir_uri in self.dirs.items():
                out = pa.table(
                    {
                        "image_id": table.column("image_id"),
                        "label": table.column("label"),
                        SCORES: table.column(f"{SCORES}.{layer}"),
                    }
                )
                buf = pa.BufferOutputStream()
                pq.write_table(out, buf, compression="zstd")
                data = buf.getvalue().to_pybytes()
                store.write_bytes(store.join(dir_uri, name), data)
                files[layer].append((name, out.num_rows, store.file_record(data)))  # size + checksum
            if self.counter is not None:
                self.counter.add.remote(table.num_rows + int((~ok).sum()))
        return {"files": files, "rows": rows, "corrupt": corrupt, "corrupt_ids": corrupt_ids}

    def on_write_complete(self, write_result) -> None:
        merged: dict = {
            "files": {layer: [] for layer in self.dirs},
            "rows": 0,
            "corrupt": 0,
            "corrupt_ids": [],
        }
        for r in write_result.write_returns:
            if not r:
                continue
            for layer, fl in r["files"].items():
                merged["files"][layer].extend(fl)
            merged["rows"] += r["rows"]
            merged["corrupt"] += r["corrupt"]
            merged["corrupt_ids"].extend(r["corrupt_ids"])
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


# --- the job -----------------------------------------------------------------------


def check_spec(spec: ActivationsSpec) -> None:
    """Fail before any cluster resource is used: unknown layers, missing shards or weights."""
    from shared.datasets import list_shards
    from shared.models.zoo import model_info

    info = model_info(spec.model)
    for layer in spec.layers:
        info.resolve_layer(layer)  # LayerError lists the valid names
    list_shards(spec.dataset, spec.split)  # DatasetError names the path and split
    integrity.check_dataset(spec.dataset, spec.split)  # a damaged shard is named, with its re-import
    if "://" in spec.weights or "/" in spec.weights or spec.weights.endswith((".pt", ".pth")):
        if not store.exists(spec.weights):
            raise FileNotFoundError(
                f"weights {spec.weights} not found: pass an existing checkpoint path or URI"
            )


def run_activations(
    spec: ActivationsSpec, store_uri: str, progress: Progress = no_progress
) -> ActivationsResult:
    """Compute (or reuse) the activation tables of ``spec.layers``; needs a running Ray (jobs.raysetup)."""
    import ray

    from jobs.raysetup import cpu_actor_pool, free_gpus
    from shared.dataset_meta import dataset_id, split_size
    from shared.datasets import read_records
    from shared.models.zoo import model_info

    t0 = time.time()
    check_spec(spec)
    info = model_info(spec.model)
    ds_id = dataset_id(spec.dataset)
    keys = {layer: spec.key(ds_id, layer) for layer in spec.layers}
    all_dirs = {
        layer: table_uri(store_uri, spec.variant_key, layer, spec.state_key, spec.split)
        for layer in spec.layers
    }
    manifests = {layer: integrity.intact_manifest(d) for layer, d in all_dirs.items()}
    done = {layer for layer, m in manifests.items() if m is not None and m.get("key") == keys[layer]}
    if len(done) == len(spec.layers):
        m0 = manifests[spec.layers[0]]
        return ActivationsResult(
            all_dirs, m0["rows"], m0["corrupt"], m0.get("corrupt_ids", []), True, time.time() - t0
        )
    # Only the layers without a committed table are computed; the others are reused as they are.
    dirs = {layer: d for layer, d in all_dirs.items() if layer not in done}
    for d in dirs.values():
        integrity.prepare_recompute(d)  # a damaged or outdated table's files go first

    gpus = free_gpus()
    total = split_size(spec.dataset, spec.split)
    if spec.limit is not None and total is not None:
        total = min(total, spec.limit)

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
            _decode,
            fn_kwargs={"pre": info.preprocess},
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
            fn_constructor_kwargs={**scorer_args, "threads": 1, "pre": info.preprocess},
            compute=ray.data.ActorPoolStrategy(size=spec.num_actors or n_actors),
            batch_size=spec.batch_size,
            batch_format="numpy",
            # Half a CPU each: whole CPUs for every actor would leave none for the read and
            # write tasks, and the pipeline would stall.
            num_cpus=cpus_each,
        )
    attempt = uuid.uuid4().hex[:8]
    counter = _counter_actor()
    sink = LayerTablesSink(dirs, attempt, counter)
    _write_with_progress(ds, sink, counter, total, progress)
    res = sink.result
    for layer, d in dirs.items():
        files = sorted(res["files"][layer], key=lambda f: f[0])
        _sweep_stale(d, {f for f, _, _ in files})
        first = (
            pq.read_schema(store.resolve(store.join(d, files[0][0]))[1], filesystem=store.resolve(d)[0])
            if files
            else None
        )
        store.write_manifest(
            d,
            {
                "kind": "activations",
                "key": keys[layer],
                "producer": CODE_VERSION,
                "files": [f for f, _, _ in files],
                "rows": res["rows"],
                "units": first.field(SCORES).type.list_size if first is not None else 0,
                "corrupt": res["corrupt"],
                "corrupt_ids": res["corrupt_ids"],
                "schema": str(first) if first is not None else "",
                "inputs": {
                    "dataset": spec.dataset,
                    "dataset_id": ds_id,
                    "model": spec.model,
                    "weights": spec.weights,
                    "variant_key": spec.variant_key,
                    "state_key": spec.state_key,
                    "layer": layer,
                    "split": spec.split,
                    "limit": spec.limit,
                },
            },
            known={f: rec for f, _, rec in files},
        )
    ray.kill(counter)
    return ActivationsResult(
        all_dirs, res["rows"], res["corrupt"], res["corrupt_ids"], False, time.time() - t0
    )


def _write_with_progress(ds, sink, counter, total: int, progress: Progress) -> None:
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


def _sweep_stale(dir_uri: str, keep: set[str]) -> None:
    """Delete parts of earlier, uncommitted attempts (they were never named by a manifest)."""
    for f in store.listdir(dir_uri):
        name = f.rsplit("/", 1)[-1]
        if name.startswith("part-") and name not in keep:
            store.delete(f)


# --- reading tables back ---------------------------------------------------------------


def iter_table(
    dir_uri: str, batch_rows: int = 4096, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a committed table's rows (only the files its manifest names, checked against it)."""
    m = store.read_manifest(dir_uri)
    if m is None:
        raise store.StoreError(
            f"activation table {dir_uri} is not complete: no {store.MANIFEST} (compute it)"
        )
    for f in m.get("files", []):
        yield from integrity.iter_parquet(dir_uri, f, m, batch_size=batch_rows, columns=columns)


def scores_of(batch: pa.RecordBatch) -> np.ndarray:
    """[N, J] float32 view of a batch's score column."""
    col = batch.column(SCORES)
    j = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, j)


def read_table(dir_uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_ids, labels, scores [N, J]) of a whole table; for small tables (tests, D_tau subsets)."""
    ids, labels, scores = [], [], []
    for b in iter_table(dir_uri):
        ids.append(b.column("image_id").to_numpy(zero_copy_only=False))
        labels.append(b.column("label").to_numpy())
        scores.append(scores_of(b))
    if not ids:
        m = store.read_manifest(dir_uri) or {}
        return (
            np.array([], dtype=object),
            np.array([], dtype=np.int64),
            np.zeros((0, m.get("units", 0)), np.float32),
        )
    return np.concatenate(ids), np.concatenate(labels), np.concatenate(scores)


def variant_tables(
    dataset: str, splits: tuple[str, ...], model: str, weights: str, variant_key: str,
    layers: tuple[str, ...], store_uri: str, progress: Progress = no_progress,
) -> None:  # fmt: skip
    """θ0's tables of a variant on each split (top-k sets come from train, D_τ from val)."""
    for split in dict.fromkeys(splits):
        spec = ActivationsSpec(dataset=dataset, split=split, model=model, weights=weights,
                               variant_key=variant_key, layers=layers)  # fmt: skip
        run_activations(spec, store_uri, progress=progress)
