"""The input family's job (SCIENCE.md §7): perturb validation images of one model, measure, commit.

One model from the store (a base model, a pruned variant or a trial's fine-tuned model) is
attacked on a seeded subset of the validation split with a ``shared.perturb`` plugin, batch
by batch. Two executors attack the same batches with the same code (``jobs.input_parts``):
``local`` in the calling process on its device (a Tune trial that holds a GPU) and ``ray-data``,
a Ray Data job whose actors load the victim once each, one GPU per actor where GPUs are free,
CPU actors otherwise (``jobs.input_raydata``); ``auto`` picks (:func:`choose_executor`). Output:
``{store}/input_attacks/model={model_key}/{key}/`` with ``images.parquet`` (one row per image:
its id, label, target, clean prediction and every per-image column of the attack), the
pictures and, last, ``_MANIFEST.json`` with the summary and the executor that ran; a committed
key is never recomputed.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs import input_parts as parts
from shared import store
from shared.device import pick_device
from shared.perturb import get_perturbation

CODE_VERSION = "input-attack-v1"
EXECUTION_ONLY = ("weights", "device", "batch_size", "executor")
EXECUTORS = ("auto", "local", "ray-data")


@dataclass(frozen=True)
class InputAttackSpec:
    """What determines one measurement (all but EXECUTION_ONLY is keyed: the victim by its content key)."""

    dataset: str
    model: str  # registered model name
    weights: str  # the victim's checkpoint URI or torchvision weights name (located by model_key)
    model_key: str  # content key of the victim: the variant's, or the trial's that trained it
    attack: str  # a registered perturbation
    params: dict[str, Any]  # its constructor's arguments
    interpreter: str = "gradcam"
    layer: str = "target_layer"
    images: int = 100
    target: int | str = "random"  # a class index, or "random": one per image, never its label
    seed: int = 0
    split: str = "val"
    picture_images: int = 4
    formula: str = ""
    device: str = field(default="auto", compare=False)
    batch_size: int = field(default=16, compare=False)
    executor: str = field(default="auto", compare=False)  # one of EXECUTORS: where the batches are attacked

    def key(self, dataset_id: str) -> str:
        ident = {k: v for k, v in asdict(self).items() if k not in EXECUTION_ONLY}
        return store.content_key(ident, dataset_id, CODE_VERSION)


@dataclass
class InputAttackResult:
    uri: str
    summary: dict[str, float]  # image means of the per-image columns, clean_acc, images
    table_uri: str
    pictures: list[tuple[str, str]]  # (store URI, artifact file name)
    skipped: bool
    seconds: float
    executor: str = ""  # "local" or "ray-data": the one that computed it (when skipped, as recorded)
    pool: str = ""  # ray-data: the actor pool it ran on (actors, CPUs and GPUs each)


def result_dir(store_uri: str, spec: InputAttackSpec, key: str) -> str:
    return store.join(store_uri, "input_attacks", f"model={spec.model_key}", key)


def committed(spec: InputAttackSpec, store_uri: str) -> InputAttackResult | None:
    from shared.dataset_meta import dataset_id

    key = spec.key(dataset_id(spec.dataset))
    out = result_dir(store_uri, spec, key)
    m = store.read_manifest(out)
    if m is None or m.get("key") != key:
        return None
    pics = [(store.join(out, f), f) for f in m.get("pictures", [])]
    table = store.join(out, "images.parquet")
    return InputAttackResult(
        out, m["summary"], table, pics, True, 0.0, m.get("executor", ""), m.get("pool", "")
    )


def choose_executor(requested: str) -> str:
    """``auto``: ``local`` where this process holds a GPU (a trial's: the attack is fastest there) or Ray is
    not started; ``ray-data`` where GPUs are free (one actor each); else the activations' rule
    (``jobs.activations.choose_executor``: ``ray-data`` for a driver on several nodes, else ``local``)."""
    if requested not in EXECUTORS:
        raise ValueError(
            f"InputAttackSpec.executor={requested!r} is not known; valid: {', '.join(EXECUTORS)} (auto: "
            "local in a process that holds a GPU or without Ray, ray-data when GPUs are free)"
        )
    if requested != "auto":
        return requested
    import ray

    from jobs import activations
    from jobs.raysetup import free_gpus

    if not ray.is_initialized():
        return "local"
    in_task = ray.get_runtime_context().get_task_id() is not None
    if in_task and ray.get_gpu_ids():
        return "local"
    return "ray-data" if free_gpus() >= 1 else activations.choose_executor("auto")


def run_input_attack(spec: InputAttackSpec, store_uri: str) -> InputAttackResult:
    """Attack (or reuse) one model's validation images; see the module docstring."""
    from shared.dataset_meta import dataset_id

    done = committed(spec, store_uri)
    if done is not None:
        return done
    t0 = time.time()
    executor = choose_executor(spec.executor)
    key = spec.key(dataset_id(spec.dataset))
    out = result_dir(store_uri, spec, key)
    # the driver's model draws the targets and the pictures; with ray-data the GPUs belong to the actors
    device = pick_device(spec.device if executor == "local" else "cpu")
    victim = parts.load_victim(spec.model, spec.weights, spec.interpreter, spec.layer, device)
    ids, x, labels, targets = parts.prepare(spec, victim, device)
    batches = parts.input_batches(ids, x, labels, targets, spec.batch_size)
    shape, sizing = tuple(x.shape[1:]), ""
    if executor == "local":
        perturbation = get_perturbation(spec.attack)(**spec.params)
        tables = [
            parts.attack_batch(victim, perturbation, b, device, shape, spec.picture_images) for b in batches
        ]
    else:
        from jobs.input_raydata import run_ray_data
        from jobs.raysetup import ensure_ray

        ensure_ray()  # joins the trial's cluster, or starts a local one for a driver without it
        tables, size = run_ray_data(spec, batches, shape)
        sizing = size.describe()
    table, shown = parts.assemble(tables)
    summary = parts.summary(table)
    store.write_bytes(store.join(out, "images.parquet"), _parquet(table))
    pictures = _pictures(spec, victim, x, labels, targets, shown, device)
    for name, png in pictures.items():
        store.write_bytes(store.join(out, name), png)
    summary["seconds"] = time.time() - t0  # the measurement's cost, kept with it (a reused one costs 0)
    store.write_manifest(out, {"kind": "input-attack", "key": key, "spec": asdict(spec), "summary": summary,
                               "executor": executor, "pool": sizing, "pictures": list(pictures),
                               "files": ["images.parquet", *pictures]})  # fmt: skip
    pics = [(store.join(out, n), n) for n in pictures]
    return InputAttackResult(
        out, summary, store.join(out, "images.parquet"), pics, False, time.time() - t0, executor, sizing
    )


def _pictures(spec, victim, x, labels, targets, shown, device) -> dict[str, bytes]:
    from jobs.input_figures import maps_picture, regions_picture

    n = min(spec.picture_images, len(x))
    if n == 0 or "adv" not in shown:
        return {}
    xb, yb, tb = x[:n].to(device), labels[:n].to(device), targets[:n].to(device)
    title = f"{spec.model}: {spec.attack} on {spec.interpreter} maps (model {spec.model_key})"
    if "region_kind" in shown:
        return {
            "pse_regions.png": regions_picture(
                victim, xb, yb, tb, shown, spec.params["grid"], title, spec.params["topk_percent"]
            )
        }
    return {"maps.png": maps_picture(victim, xb, yb, tb, shown, title)}


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
