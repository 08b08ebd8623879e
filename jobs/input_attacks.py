"""The input family's job (SCIENCE.md §7): perturb validation images of one model, measure, commit.

One model from the store (a base model, a pruned variant or a trial's fine-tuned model) is
attacked on a seeded subset of the validation split with a ``shared.perturb`` plugin, batch
by batch on the chosen device (CUDA when present). Within a Tune trial this runs in the
trial's process: a plain batched loop, no Ray Data pipeline inside a trial. Output:
``{store}/input_attacks/model={model_key}/{key}/`` with ``images.parquet`` (one row per image:
its id, label, target, clean prediction and every per-image column of the attack), the
pictures and, last, ``_MANIFEST.json`` with the summary; a committed key is never recomputed.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from jobs.saliency_eval import split_images
from shared import store
from shared.device import pick_device
from shared.models.zoo import build_model, model_info
from shared.perturb import check_targets, get_perturbation, make_victim, random_targets

CODE_VERSION = "input-attack-v1"
EXECUTION_ONLY = ("weights", "device", "batch_size")


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
    return InputAttackResult(out, m["summary"], store.join(out, "images.parquet"), pics, True, 0.0)


def run_input_attack(spec: InputAttackSpec, store_uri: str) -> InputAttackResult:
    """Attack (or reuse) one model's validation images; see the module docstring."""
    from shared.dataset_meta import dataset_id

    done = committed(spec, store_uri)
    if done is not None:
        return done
    t0 = time.time()
    key = spec.key(dataset_id(spec.dataset))
    out = result_dir(store_uri, spec, key)
    device = pick_device(spec.device)
    model = build_model(spec.model, weights=spec.weights)[0].to(device).eval()
    victim = make_victim(model, spec.model, spec.interpreter, spec.layer)
    ids, x, labels, targets = _images(spec, model, device)
    perturbation = get_perturbation(spec.attack)(**spec.params)
    columns: dict[str, list] = {"image_id": ids, "label": labels.tolist(), "target": targets.tolist()}
    shown: dict[str, torch.Tensor] = {}
    for i in range(0, len(x), spec.batch_size):
        xb = x[i : i + spec.batch_size].to(device)
        yb, tb = labels[i : i + len(xb)].to(device), targets[i : i + len(xb)].to(device)
        cols = perturbation.attack(victim, xb, yb, tb)
        cols["clean_pred"] = victim.logits(xb).argmax(1)
        _collect(columns, cols)
        if i < spec.picture_images:  # the pictures' images: the first ones, with their attack's images
            for k, v in cols.items():
                if v.dim() == 4 or k.startswith("region_"):
                    shown[k] = torch.cat([shown[k], v.cpu()]) if k in shown else v.detach().cpu()
    table = pa.table(columns)
    summary = _summary(columns)
    store.write_bytes(store.join(out, "images.parquet"), _parquet(table))
    pictures = _pictures(spec, victim, x, labels, targets, shown, device)
    for name, png in pictures.items():
        store.write_bytes(store.join(out, name), png)
    summary["seconds"] = time.time() - t0  # the measurement's cost, kept with it (a reused one costs 0)
    store.write_manifest(out, {"kind": "input-attack", "key": key, "spec": asdict(spec), "summary": summary,
                               "pictures": list(pictures), "files": ["images.parquet", *pictures]})  # fmt: skip
    pics = [(store.join(out, n), n) for n in pictures]
    return InputAttackResult(out, summary, store.join(out, "images.parquet"), pics, False, time.time() - t0)


def _images(
    spec: InputAttackSpec, model, device
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attacked images in [0, 1] pixels, their labels and targets (a fixed target skips its own class)."""
    ids, pixels, labels = split_images(spec.dataset, spec.split, spec.model, spec.images, spec.seed)
    pre = model_info(spec.model).preprocess
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    x = (pixels * std + mean).clamp(0, 1)
    with torch.no_grad():
        classes = int(model(pixels[:1].to(device)).shape[1])
    if spec.target == "random":
        targets = random_targets(labels, classes, torch.Generator().manual_seed(spec.seed))
        return ids, x, labels, targets
    targets = check_targets(int(spec.target), len(labels), classes, torch.device("cpu"))
    keep = (labels != targets).nonzero().flatten()
    if len(keep) == 0:
        raise ValueError(f"every attacked image is of the target class {spec.target}: nothing to attack")
    return [ids[i] for i in keep.tolist()], x[keep], labels[keep], targets[keep]


def _collect(columns: dict[str, list], cols: dict[str, torch.Tensor]) -> None:
    """Per-image columns: [N] values, [N, R] as lists (PSE's regions); images stay out of the table."""
    for k, v in cols.items():
        if v.dim() > 2:
            continue
        v = v.detach().cpu()
        v = v.float() if v.dtype.is_floating_point else v
        columns.setdefault(k, []).extend(v.tolist())


def _summary(columns: dict[str, list]) -> dict[str, float]:
    """Image means of every scalar column (non-finite values, e.g. an Adv² image never on target, left out)."""
    out: dict[str, float] = {"images": float(len(columns["image_id"]))}
    for k, values in columns.items():
        if k in ("image_id", "label", "target", "clean_pred") or not values or isinstance(values[0], list):
            continue
        finite = [float(v) for v in values if math.isfinite(float(v))]
        if finite:
            out[k] = sum(finite) / len(finite)
    pred, label = columns["clean_pred"], columns["label"]
    out["clean_acc"] = sum(p == y for p, y in zip(pred, label)) / len(label)
    return out


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
