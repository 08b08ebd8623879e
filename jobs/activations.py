"""Activation tables (ARCHITECTURE.md, phase 2): the job's entry point, its spec, commit and readers.

shards -> decode + preprocess -> forward with unit-score hooks -> one Parquet
table per layer, committed by its manifest. Two executors run the same
decode, forward and part writing (``jobs.activation_parts``): ``local`` streams
the split in the calling process (one node: it beats Ray Data there, see
benchmarks/activations.py) and ``ray-data`` spreads it over a multi-node
cluster (``jobs.activations_raydata``). ``executor="auto"`` picks by scale.

Layout: ``{store}/activations/model={variant}/layer={layer}/state={state}/split={split}/``
with ``part-*.parquet`` and ``_MANIFEST.json``. Parts carry an attempt id in
their names and readers only read the files a manifest names, so a killed
write leaves no manifest and its stale parts are never read (they are swept
on the next attempt).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.activation_parts import (
    MAX_CORRUPT_IDS,
    SCORES,
    empty_result,
    merge,
    part_name,
    scored_table,
    write_block,
)
from shared import integrity, store
from shared.progress import Progress, no_progress

CODE_VERSION = "activations-v1"
EXECUTORS = ("auto", "local", "ray-data")
PART_ROWS = 8192  # rows per part of a table committed from recorded scores


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
    # "local": stream in this process; "ray-data": a Ray Data pipeline; "auto": local on one node
    executor: str = field(default="auto", compare=False)

    def key(self, dataset_id: str, layer: str) -> str:
        """One layer's table key: tables are per layer, so other layers computed alongside do not matter."""
        skip = {"batch_size", "num_actors", "device", "amp", "executor", "layers"}
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
    executor: str = ""  # "local" or "ray-data": the one that computed the tables (when skipped, as recorded)


def table_uri(store_uri: str, variant_key: str, layer: str, state_key: str, split: str) -> str:
    return store.join(
        store_uri,
        "activations",
        f"model={variant_key}",
        f"layer={layer}",
        f"state={state_key}",
        f"split={split}",
    )


# --- the job -----------------------------------------------------------------------


def check_spec(spec: ActivationsSpec) -> None:
    """Fail before any cluster resource is used: unknown layers, missing shards or weights."""
    from shared.datasets import list_shards
    from shared.models.zoo import model_info

    if spec.executor not in EXECUTORS:
        raise ValueError(
            f"ActivationsSpec.executor={spec.executor!r} is not known; valid: {', '.join(EXECUTORS)} "
            f"(auto: local on one node, ray-data when the Ray cluster has several)"
        )
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


def choose_executor(requested: str) -> str:
    """``ray-data`` when a driver's job spans a multi-node cluster, else ``local``.

    ``local`` when Ray is not started, has one alive node, or when the caller is itself a Ray task or
    actor (a Tune trial, a pruning task): it holds its own CPUs and GPU, while Ray Data's actors would
    ask the cluster for more, competing with the other trials and waiting forever once the trials
    hold every GPU (seen after a lost node, when the free-GPU count was stale).
    """
    if requested != "auto":
        return requested
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_task_id() is not None:
        return "local"
    alive = sum(1 for n in ray.nodes() if n.get("Alive"))
    return "ray-data" if alive > 1 else "local"


def run_activations(
    spec: ActivationsSpec, store_uri: str, progress: Progress = no_progress
) -> ActivationsResult:
    """Compute (or reuse) the activation tables of ``spec.layers``; ``ray-data`` needs a running Ray."""
    from shared.dataset_meta import dataset_id, split_size
    from shared.models.zoo import model_info

    t0 = time.time()
    check_spec(spec)
    ds_id = dataset_id(spec.dataset)
    all_dirs, dirs, m0 = _uncommitted(spec, store_uri, ds_id)
    if not dirs:
        return ActivationsResult(
            all_dirs, m0["rows"], m0["corrupt"], m0.get("corrupt_ids", []), True, time.time() - t0,
            m0.get("executor", ""),
        )  # fmt: skip
    total = split_size(spec.dataset, spec.split)
    if spec.limit is not None and total is not None:
        total = min(total, spec.limit)
    executor = choose_executor(spec.executor)
    pre = model_info(spec.model).preprocess
    attempt = uuid.uuid4().hex[:8]
    if executor == "local":
        from jobs.activations_local import run_local

        res = run_local(spec, pre, dirs, attempt, total, progress)
    else:
        from jobs.activations_raydata import run_ray_data

        res = run_ray_data(spec, pre, dirs, attempt, total, progress)
    for layer, d in dirs.items():
        _commit(spec, layer, d, spec.key(ds_id, layer), ds_id, res, executor)
    return ActivationsResult(
        all_dirs, res["rows"], res["corrupt"], res["corrupt_ids"], False, time.time() - t0, executor
    )


def _uncommitted(
    spec: ActivationsSpec, store_uri: str, ds_id: str
) -> tuple[dict[str, str], dict[str, str], dict]:
    """(every layer's table folder, the folders of the layers to write, the first layer's manifest).

    Only the layers without a committed table are written; the others are reused as they are. A
    damaged or outdated table's files go first.
    """
    all_dirs = {
        ly: table_uri(store_uri, spec.variant_key, ly, spec.state_key, spec.split) for ly in spec.layers
    }
    manifests = {ly: integrity.intact_manifest(d) for ly, d in all_dirs.items()}
    todo = {
        ly: d for ly, d in all_dirs.items()
        if manifests[ly] is None or manifests[ly].get("key") != spec.key(ds_id, ly)
    }  # fmt: skip
    for d in todo.values():
        integrity.prepare_recompute(d)
    return all_dirs, todo, manifests[spec.layers[0]] or {}


def commit_scored(
    spec: ActivationsSpec,
    store_uri: str,
    ids: list[str],
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    unreadable: list[str],
    source: str,
) -> ActivationsResult:
    """Commit the tables of ``spec`` from unit scores recorded elsewhere (no forward pass here).

    The attack's last evaluation classifies every readable image of the split with the result's
    weights, in fp32 and eval mode, through the same decode: its unit scores are this stage's
    rows (``jobs.attack.EvalScores``). ``source`` goes into the manifest as the executor. Layers
    already committed are left as they are.
    """
    from shared.dataset_meta import dataset_id

    if spec.limit is not None:
        raise ValueError(
            f"commit_scored: ActivationsSpec.limit={spec.limit}; recorded scores cover a whole split"
        )
    t0 = time.time()
    ds_id = dataset_id(spec.dataset)
    all_dirs, dirs, _ = _uncommitted(spec, store_uri, ds_id)
    res = empty_result(dirs)
    if dirs:
        table = scored_table(ids, labels, np.ones(len(ids), bool), {ly: scores[ly] for ly in dirs})
        attempt = uuid.uuid4().hex[:8]
        for i, start in enumerate(range(0, len(ids), PART_ROWS)):
            res = merge(res, write_block(table.slice(start, PART_ROWS), dirs, part_name(attempt, 0, i)))
        res["corrupt"], res["corrupt_ids"] = len(unreadable), list(unreadable[:MAX_CORRUPT_IDS])
        for layer, d in dirs.items():
            _commit(spec, layer, d, spec.key(ds_id, layer), ds_id, res, source)
    return ActivationsResult(
        all_dirs, len(ids), len(unreadable), list(unreadable[:MAX_CORRUPT_IDS]), not dirs, time.time() - t0, source,
    )  # fmt: skip


def _commit(
    spec: ActivationsSpec, layer: str, d: str, key: str, ds_id: str, res: dict, executor: str
) -> None:
    """Sweep a killed attempt's parts, then write the manifest that names this attempt's."""
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
            "key": key,
            "producer": CODE_VERSION,
            "executor": executor,
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
