"""Top-1 accuracy of a model on a whole split (SCIENCE.md §3: Acc on V), as a cached stage.

Activation tables keep squared unit scores only, so a prediction cannot be read back from
them (a squared logit loses its sign); this is one more forward pass over the split, run by the
activation tables' executors: on one node a loop in this process (Ray Data's actor start-up costs
more than a small split's forward pass), across nodes Ray Data: decode (CPU tasks) -> forward
(actor pool, GPU actors when the cluster has them) -> count on the driver. The result is a manifest only:
``{store}/accuracy/model={variant}/state={state}/split={split}/_MANIFEST.json``, keyed by
(model, weights, split, dataset, code version), so Acc(θ0) is computed once per variant and
shared by every attack on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from shared import integrity, store
from shared.progress import Progress, no_progress

CODE_VERSION = "accuracy-v1"


@dataclass(frozen=True)
class AccuracyResult:
    uri: str  # stage folder (its manifest holds the numbers)
    acc: float  # top-1 in % over the readable images of the split
    correct: int
    rows: int  # images classified (corrupt ones excluded)
    corrupt: int
    skipped: bool  # True when a committed result with the same key was reused


def accuracy_uri(store_uri: str, variant_key: str, state_key: str, split: str) -> str:
    return store.join(store_uri, "accuracy", f"model={variant_key}", f"state={state_key}", f"split={split}")


class _Predictor:
    """Actor: holds the model, turns image batches into top-1 predictions (-1 for undecodable images)."""

    def __init__(self, model: str, weights: str, device: str, threads: int, s3, pre=None) -> None:
        import torch

        from shared.device import pick_device
        from shared.models.zoo import build_model

        if s3 is not None:  # an actor: weights may live on the driver's S3
            store.configure(s3)  # (in this process, None: pinning a config would hide later changes)
        torch.set_num_threads(max(1, threads))
        self.device = pick_device(device)
        self.model, _ = build_model(model, weights=weights)
        self.model.eval().to(self.device)
        self.pre = pre

    def __call__(self, batch: dict) -> dict:
        import torch

        from shared.datasets import decode_batch

        if "pixels" not in batch:  # CPU-only pipelines decode inside the actor
            batch = decode_batch(batch, self.pre)
        ok = np.asarray(batch["ok"], dtype=bool)
        pred = np.full(len(ok), -1, dtype=np.int64)
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])).to(self.device)
            with torch.inference_mode():
                pred[ok] = self.model(x).argmax(dim=1).cpu().numpy()
        return {"label": np.asarray(batch["label"], dtype=np.int64), "pred": pred, "ok": ok}


def _decode(batch: dict, pre) -> dict:
    from shared.datasets import decode_batch

    return decode_batch(batch, pre)


def run_accuracy(
    dataset: str,
    split: str,
    model: str,
    weights: str,
    store_uri: str,
    variant_key: str,
    state_key: str,
    *,
    device: str = "auto",
    batch_size: int = 256,
    num_actors: int | None = None,
    progress: Progress = no_progress,
    executor: str = "auto",
) -> AccuracyResult:
    """Top-1 of ``model`` with ``weights`` on every image of ``split`` (computed or reused).

    ``executor`` as for the activation tables (``jobs.activations.choose_executor``): ``ray-data``
    needs a running Ray."""
    out = accuracy_uri(store_uri, variant_key, state_key, split)
    ident, key = _identity(dataset, split, model, weights)
    done = committed_accuracy(dataset, split, model, weights, store_uri, variant_key, state_key)
    if done is not None:
        return done
    integrity.check_dataset(dataset, split)  # a damaged shard is named, with its re-import
    integrity.prepare_recompute(out)
    t0 = time.time()
    from jobs.activations import choose_executor

    if choose_executor(executor) == "local":
        preds, labels, corrupt = _predict_local(dataset, split, model, weights, device, batch_size, progress)
    else:
        preds, labels, corrupt = _predict(
            dataset, split, model, weights, device, batch_size, num_actors, progress
        )
    if len(labels) == 0:
        raise ValueError(f"no readable image in split {split!r} of {dataset}: accuracy is undefined")
    from shared.metrics import accuracy

    acc = accuracy(preds, labels)
    correct = int((preds == labels).sum())
    store.write_manifest(
        out,
        {
            "kind": "accuracy", "key": key, "producer": CODE_VERSION, "files": [], "acc": acc,
            "correct": correct, "rows": int(len(labels)), "corrupt": corrupt, "seconds": time.time() - t0,
            "inputs": {**ident, "dataset": dataset, "variant_key": variant_key, "state_key": state_key},
        },
    )  # fmt: skip
    return AccuracyResult(out, acc, correct, int(len(labels)), corrupt, False)


def _identity(dataset: str, split: str, model: str, weights: str) -> tuple[dict, str]:
    from shared.dataset_meta import dataset_id

    ident = {"model": model, "weights": weights, "split": split}
    return ident, store.content_key(ident, dataset_id(dataset), CODE_VERSION)


def committed_accuracy(
    dataset: str, split: str, model: str, weights: str, store_uri: str, variant_key: str, state_key: str
) -> AccuracyResult | None:
    """The committed result for these inputs, or None (reads one manifest)."""
    out = accuracy_uri(store_uri, variant_key, state_key, split)
    done = integrity.intact_manifest(out)
    if done is None or done.get("key") != _identity(dataset, split, model, weights)[1]:
        return None
    return AccuracyResult(out, done["acc"], done["correct"], done["rows"], done["corrupt"], True)


def commit_counted(
    dataset: str, split: str, model: str, weights: str, store_uri: str, variant_key: str, state_key: str,
    correct: int, rows: int, corrupt: int, source: str,
) -> AccuracyResult:  # fmt: skip
    """Commit a top-1 counted elsewhere over every readable image of ``split`` (no forward pass here).

    The attack job's evaluations classify the whole split when its evaluation subset is all of
    it: the same images, decoded the same way, with the same weights, so its count of the
    committed state is this stage's result (``source`` says where it came from).
    """
    from shared.metrics import accuracy

    out = accuracy_uri(store_uri, variant_key, state_key, split)
    ident, key = _identity(dataset, split, model, weights)
    preds = np.r_[np.zeros(correct, np.int64), np.ones(rows - correct, np.int64)]
    acc = accuracy(preds, np.zeros(rows, np.int64))  # the same formula as a computed result
    integrity.prepare_recompute(out)
    store.write_manifest(
        out,
        {
            "kind": "accuracy", "key": key, "producer": CODE_VERSION, "files": [], "acc": acc,
            "correct": int(correct), "rows": int(rows), "corrupt": int(corrupt), "seconds": 0.0, "source": source,
            "inputs": {**ident, "dataset": dataset, "variant_key": variant_key, "state_key": state_key},
        },
    )  # fmt: skip
    return AccuracyResult(out, acc, int(correct), int(rows), int(corrupt), False)


def _predict_local(
    dataset: str, split: str, model: str, weights: str, device: str, batch_size: int, progress: Progress
) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`_predict` in this process: the same :class:`_Predictor` called on each batch in turn."""
    import torch

    from jobs.activations_local import encoded, record_batches
    from shared.models.zoo import model_info

    predict = _Predictor(model, weights, device, torch.get_num_threads(), None, model_info(model).preprocess)
    batches = (predict(encoded(t)) for t in record_batches(dataset, split, batch_size, None))
    return _collect(batches, dataset, split, progress)


def _collect(batches, dataset: str, split: str, progress: Progress) -> tuple[np.ndarray, np.ndarray, int]:
    """(predictions, labels) of the readable images and the count of unreadable ones, from
    :class:`_Predictor` outputs, with progress over the split."""
    from shared.dataset_meta import split_size

    total = split_size(dataset, split)
    preds, labels = [], []
    corrupt = seen = 0
    for b in batches:
        ok = np.asarray(b["ok"], dtype=bool)
        preds.append(b["pred"][ok])
        labels.append(b["label"][ok])
        corrupt += int((~ok).sum())
        seen += len(ok)
        progress(seen, total, phase="accuracy", split=split)
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), corrupt
    return np.concatenate(preds), np.concatenate(labels), corrupt


def _predict(
    dataset: str,
    split: str,
    model: str,
    weights: str,
    device: str,
    batch_size: int,
    num_actors: int | None,
    progress: Progress,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(predictions, labels) of the readable images and the count of unreadable ones."""
    import ray

    from jobs.raysetup import cpu_actor_pool, free_gpus
    from shared.datasets import read_records
    from shared.models.zoo import model_info

    pre = model_info(model).preprocess
    args = {"model": model, "weights": weights, "device": device, "s3": store.current_s3()}
    ds = read_records(dataset, split)
    gpus = free_gpus()
    if gpus >= 1:
        # As in jobs.activations: decode on CPU tasks, forward on GPU actors (different resources
        # keep Ray from fusing the two stages).
        ds = ds.map_batches(_decode, fn_kwargs={"pre": pre}, batch_format="numpy", batch_size=batch_size)
        pool = ray.data.ActorPoolStrategy(size=num_actors or int(gpus))
        ds = ds.map_batches(
            _Predictor, fn_constructor_kwargs={**args, "threads": 2}, compute=pool,
            batch_size=batch_size, batch_format="numpy", num_gpus=1, num_cpus=1,
        )  # fmt: skip
    else:
        # CPU only: each single-threaded actor decodes its own batches; half a CPU each leaves
        # room for the read tasks (as in jobs.activations).
        n_actors, cpus_each = cpu_actor_pool()
        pool = ray.data.ActorPoolStrategy(size=num_actors or n_actors)
        ds = ds.map_batches(
            _Predictor, fn_constructor_kwargs={**args, "threads": 1, "pre": pre}, compute=pool,
            batch_size=batch_size, batch_format="numpy", num_cpus=cpus_each,
        )  # fmt: skip
    return _collect(ds.iter_batches(batch_size=None, batch_format="numpy"), dataset, split, progress)
