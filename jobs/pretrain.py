"""Pretrain a base model from scratch on a dataset in the store (the model every attack starts from).

Output: ``{store}/models/{key}/model.pt`` (a ``vizsweep-model-v1`` checkpoint) and
``_MANIFEST.json`` written last; a run whose manifest exists is reused, not redone.
The train split is decoded once into a uint8 tensor (the synthetic set is 16x300
images of 64 px, ~60 MB) and augmented on the fly with random crops and flips.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared import integrity, store
from shared.dataset_meta import dataset_id
from shared.datasets import Preprocess, decode_image, iter_records
from shared.device import autocast, pick_device
from shared.models import model_info, save_checkpoint
from shared.models.zoo import build_model
from shared.progress import Progress, no_progress

CODE_VERSION = "pretrain-v1"  # bump when training changes what a spec produces


@dataclass(frozen=True)
class PretrainSpec:
    """Everything that determines a pretrained model; all of it goes into the content key."""

    dataset: str  # dataset root URI (parquet, webdataset or folder layout)
    train_split: str = "train"  # split to train on
    val_split: str = "val"  # split whose top-1 accuracy is reported
    model: str = "alexnet_mini"  # registered model name (shared.models)
    epochs: int | None = None  # passes over the train split (None: the model's ModelInfo.pretrain_epochs)
    batch_size: int = 64  # images per optimizer step
    lr: float = 2e-3  # peak AdamW learning rate of the one-cycle schedule
    weight_decay: float = 5e-4  # AdamW decoupled weight decay
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    seed: int = 0  # init, shuffling, augmentation and dropout
    augment: bool = True  # random crop (resize -> crop) and horizontal flip
    layout: str | None = None  # dataset layout; None = detect
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    amp: bool = False  # bf16 autocast (CUDA or CPU)
    max_minutes: float | None = None  # stop early after this much training time (recorded in the manifest)

    def __post_init__(self) -> None:
        info = model_info(self.model)  # unknown names fail here, listing the valid ones
        if self.epochs is None:
            object.__setattr__(self, "epochs", info.pretrain_epochs)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PretrainSpec.{name}={value!r}: must be an integer >= 1")
        if not self.lr > 0:
            raise ValueError(f"PretrainSpec.lr={self.lr!r}: must be > 0")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"PretrainSpec.max_minutes={self.max_minutes!r}: must be > 0 or None")


@dataclass(frozen=True)
class PretrainResult:
    model_uri: str  # checkpoint URI (load with shared.models.load_checkpoint / build_model)
    key: str  # content key of the run
    val_acc: float  # top-1 on spec.val_split, in [0, 1]
    reused: bool  # True when a finished run with this key was found
    seconds: float  # wall time of this call


def model_dir(store_uri: str, key: str) -> str:
    return store.join(store_uri, "models", key)


def run_pretrain(spec: PretrainSpec, store_uri: str, progress: Progress = no_progress) -> PretrainResult:
    """Train ``spec.model`` (or reuse a finished run) and commit checkpoint + manifest."""
    t0 = time.time()
    key = store.content_key(spec, dataset_id(spec.dataset), CODE_VERSION)
    out = model_dir(store_uri, key)
    model_uri = store.join(out, "model.pt")
    done = integrity.intact_manifest(out)  # a damaged checkpoint: trained again
    if done is not None:
        return PretrainResult(model_uri, key, float(done["val_acc"]), True, time.time() - t0)
    for split in (spec.train_split, spec.val_split):
        integrity.check_dataset(spec.dataset, split)  # a damaged shard is named, with its re-import
    integrity.prepare_recompute(out)

    device = pick_device(spec.device)
    info = model_info(spec.model)
    classes = _classes(spec.dataset)
    train_x, train_y, n_bad_train = _load_uint8(spec, spec.train_split)
    val_x, val_y, n_bad_val = _load_uint8(spec, spec.val_split)
    torch.manual_seed(spec.seed)  # model init and dropout
    model, _ = build_model(spec.model, num_classes=len(classes))
    model.to(device)
    history, stopped_early = _train(
        model, spec, info.preprocess, (train_x, train_y), (val_x, val_y), device, progress
    )
    val_acc = history[-1]["val_acc"]

    meta = {
        "classes": classes,
        "val_acc": val_acc,
        "spec": asdict(spec),
        "key": key,
        "code_version": CODE_VERSION,
    }
    save_checkpoint(model.cpu(), spec.model, model_uri, meta)
    store.write_manifest(
        out,
        {
            "kind": "pretrained-model",
            "key": key,
            "model": spec.model,
            "num_classes": len(classes),
            "classes": classes,
            "val_acc": val_acc,
            "spec": asdict(spec),
            "code_version": CODE_VERSION,
            "files": ["model.pt"],
            "history": history,
            "stopped_early": stopped_early,
            "corrupt": {spec.train_split: n_bad_train, spec.val_split: n_bad_val},
            "train_seconds": time.time() - t0,
        },
    )
    return PretrainResult(model_uri, key, val_acc, False, time.time() - t0)


def _classes(dataset: str) -> list[str]:
    uri = store.join(dataset, "classes.json")
    if store.exists(uri):
        return list(store.read_json(uri))
    m = store.read_manifest(dataset) or {}
    if "classes" in m:
        return list(m["classes"])
    raise FileNotFoundError(
        f"{dataset} has no classes.json and no 'classes' in its manifest: cannot size the classifier"
    )


def _load_uint8(spec: PretrainSpec, split: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Decode a split once at the model's resize size: uint8 [N, 3, R, R], labels [N], corrupt count."""
    pre = model_info(spec.model).preprocess
    # Crop = resize and identity normalisation: pixels in [0, 1], cropped per step below.
    raw = Preprocess(resize=pre.resize, crop=pre.resize, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    images, labels, bad = [], [], 0
    for rec in iter_records(spec.dataset, split, layout=spec.layout):
        arr = decode_image(rec["image"], raw)
        if arr is None:
            bad += 1
            continue
        images.append(np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8))
        labels.append(int(rec["label"]))
    if not images:
        raise ValueError(f"split {split!r} of {spec.dataset} has no readable images ({bad} corrupt)")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), bad


def _batch(
    x: torch.Tensor, crop: int, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator | None
) -> torch.Tensor:
    """uint8 [B,3,R,R] -> normalised float [B,3,crop,crop]: random crop + flip when ``gen``, else centre crop."""
    b, _, r, _ = x.shape
    if gen is None:
        o = (r - crop) // 2
        x = x[:, :, o : o + crop, o : o + crop]
    else:
        oy = torch.randint(0, r - crop + 1, (b,), generator=gen).to(x.device)
        ox = torch.randint(0, r - crop + 1, (b,), generator=gen).to(x.device)
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        ar = torch.arange(crop, device=x.device)
        rows = (oy[:, None] + ar)[:, None, :, None]
        cols = ox[:, None] + ar
        cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
        x = x[
            torch.arange(b, device=x.device)[:, None, None, None],
            torch.arange(3, device=x.device)[None, :, None, None],
            rows,
            cols,
        ]
    x = (x.float() / 255.0 - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def _train(
    model: nn.Module,
    spec: PretrainSpec,
    pre: Preprocess,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    progress: Progress,
) -> tuple[list[dict], bool]:
    # channels_last: oneDNN's preferred conv layout, ~25 % faster per step on CPU.
    model.to(memory_format=torch.channels_last)
    train_x, train_y = (t.to(device) for t in train)
    val_x, val_y = (t.to(device) for t in val)
    mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(spec.seed)
    n = len(train_x)
    steps = math.ceil(n / spec.batch_size)
    # fused: one kernel per step instead of ~8 small ops per tensor (2x faster on CPU, far more under contention)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=spec.lr, total_steps=spec.epochs * steps, pct_start=0.25
    )
    deadline = time.time() + 60 * spec.max_minutes if spec.max_minutes else math.inf
    history: list[dict] = []
    stopped = False
    for epoch in range(spec.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total, count = 0.0, 0
        for s in range(steps):
            idx = perm[s * spec.batch_size : (s + 1) * spec.batch_size]
            x = _batch(train_x[idx], pre.crop, mean, std, gen if spec.augment else None)
            with autocast(device, spec.amp):
                loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=spec.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
            if time.time() > deadline:
                stopped = True
                break
        acc = _accuracy(model, val_x, val_y, pre.crop, mean, std, spec, device)
        history.append({"epoch": epoch + 1, "loss": total / max(count, 1), "val_acc": acc})
        progress(epoch + 1, spec.epochs, loss=history[-1]["loss"], val_acc=acc)
        if stopped:
            break
    return history, stopped


@torch.no_grad()
def _accuracy(model, x, y, crop, mean, std, spec: PretrainSpec, device: torch.device) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 256):
        with autocast(device, spec.amp):
            logits = model(_batch(x[i : i + 256], crop, mean, std, None))
        correct += int((logits.argmax(1) == y[i : i + 256]).sum())
    return correct / len(x)
