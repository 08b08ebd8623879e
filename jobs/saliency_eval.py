"""The saliency family's measurement (SCIENCE.md §6): test losses t_i, FSR per tested interpreter,
top-1 / top-5 accuracy before and after, and before/after heatmap pictures.

For the fooled model θ and its initial model θ0, on a seeded subset of the validation split
(Active: the held-out collages), every tested interpreter's maps of both models give the
per-image test loss of the trial's fooling kind; ``FSR = mean_i 1{t_i ∈ R}`` (Heo Eq. 6). The
control (kind None) is measured with every passive kind's test loss: fine-tuning alone must
not fool. Output: ``{store}/saliency/model={variant}/state={state}/{key}/`` with ``t.parquet``
(image, interpreter, kind, t, fooled), ``maps.png`` and, last, ``_MANIFEST.json``.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from shared import store
from shared.device import pick_device
from shared.models.zoo import build_model, model_info
from shared.saliency import (
    FSR_RANGES,
    active_test_loss,
    center_mass_test_loss,
    location_loss,
    topk_loss,
    topk_mask,
)

CODE_VERSION = "saliency-eval-v1"
EXECUTION_ONLY = ("device", "batch_size")
PASSIVE = ("location", "topk", "center_mass")


@dataclass(frozen=True)
class SaliencyEvalSpec:
    """What determines the measurement of one fooled model (all but EXECUTION_ONLY is keyed)."""

    dataset: str
    model: str
    variant_key: str
    init_weights: str  # θ0
    final_weights: str  # θ
    final_state_key: str  # the attack's content key
    kind: str | None  # the fooling kind of §6; None: the control, measured with every passive kind
    interpreters: tuple[str, ...]  # tested interpreters (the transfer matrix's columns)
    layer: str = "target_layer"
    split: str = "val"
    images: int = 1000  # test images (seeded subset of the split; all when fewer)
    seed: int = 0
    collages: str | None = None  # Active: a committed collage set (its "heldout" split is tested)
    picture_images: int = 4
    device: str = field(default="auto", compare=False)
    batch_size: int = field(default=32, compare=False)

    def key(self, dataset_id: str) -> str:
        ident = {k: v for k, v in asdict(self).items() if k not in EXECUTION_ONLY}
        return store.content_key(ident, dataset_id, CODE_VERSION)


@dataclass
class SaliencyEvalResult:
    uri: str
    fsr: dict[str, dict[str, float]]  # kind -> tested interpreter -> FSR
    acc: dict[str, float]  # acc, acc_init, acc_top5, acc_top5_init (fractions in [0, 1])
    table_uri: str
    picture_uri: str | None
    skipped: bool
    seconds: float


def eval_dir(store_uri: str, spec: SaliencyEvalSpec, key: str) -> str:
    return store.join(
        store_uri, "saliency", f"model={spec.variant_key}", f"state={spec.final_state_key}", key
    )


def committed_eval(spec: SaliencyEvalSpec, store_uri: str) -> SaliencyEvalResult | None:
    from shared.dataset_meta import dataset_id

    key = spec.key(dataset_id(spec.dataset))
    out = eval_dir(store_uri, spec, key)
    m = store.read_manifest(out)
    if m is None or m.get("key") != key:
        return None
    pic = store.join(out, "maps.png") if m.get("picture") else None
    return SaliencyEvalResult(out, m["fsr"], m["acc"], store.join(out, "t.parquet"), pic, True, 0.0)


def run_saliency_eval(spec: SaliencyEvalSpec, store_uri: str) -> SaliencyEvalResult:
    """Measure (or reuse) one fooled model; see the module docstring."""
    from shared.dataset_meta import dataset_id

    done = committed_eval(spec, store_uri)
    if done is not None:
        return done
    t0 = time.time()
    key = spec.key(dataset_id(spec.dataset))
    out = eval_dir(store_uri, spec, key)
    device = pick_device(spec.device)
    models = [
        build_model(spec.model, weights=w)[0].to(device).eval()
        for w in (spec.init_weights, spec.final_weights)
    ]
    ids, pixels, labels = _val_images(spec)
    acc = _accuracy(models, pixels, labels, spec.batch_size, device)
    if spec.kind == "active":
        from jobs.collages import read_collages

        cx, c1, c2 = read_collages(spec.collages, "heldout", model_info(spec.model).preprocess)
        rows = _active_rows(spec, models, cx, c1, c2, device)
    else:
        rows = _passive_rows(spec, models, ids, pixels, labels, device)
    table = pa.table(rows)
    fsr = _fsr(table)
    store.write_bytes(store.join(out, "t.parquet"), _parquet(table))
    picture = _picture(spec, models, pixels[: spec.picture_images], labels[: spec.picture_images], device)
    if picture is not None:
        store.write_bytes(store.join(out, "maps.png"), picture)
    store.write_manifest(out, {"kind": "saliency-eval", "key": key, "spec": asdict(spec), "fsr": fsr, "acc": acc,
                               "images": len(ids), "picture": picture is not None,
                               "ranges": {k: list(v) for k, v in FSR_RANGES.items()},
                               "files": ["t.parquet", *(["maps.png"] if picture else [])]})  # fmt: skip
    pic = store.join(out, "maps.png") if picture is not None else None
    return SaliencyEvalResult(out, fsr, acc, store.join(out, "t.parquet"), pic, False, time.time() - t0)


def _val_images(spec: SaliencyEvalSpec) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    return split_images(spec.dataset, spec.split, spec.model, spec.images, spec.seed)


def split_images(
    dataset: str, split: str, model: str, images: int, seed: int
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """A seeded subset of ``images`` images of the split (all when fewer), decoded and normalised for
    ``model``: (ids, pixels, labels). Other families measure on the same images with the same seed."""
    from jobs.attack_data import split_index
    from shared.datasets import decode_image
    from shared.image_index import fetch_images

    all_ids, all_labels = split_index(dataset, split)
    rng = np.random.default_rng([seed, 11])
    pick = np.sort(rng.choice(len(all_ids), size=min(images, len(all_ids)), replace=False))
    ids = [str(i) for i in all_ids[pick]]
    raw = fetch_images(dataset, split, ids)
    pre = model_info(model).preprocess
    arrays = [decode_image(raw[i], pre) for i in ids]
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if not keep:
        raise ValueError(f"none of the {len(ids)} test images of split {split!r} of {dataset} decodes")
    pixels = torch.from_numpy(np.stack([arrays[i] for i in keep]))
    labels = torch.from_numpy(all_labels[pick][keep].astype(np.int64))
    return [ids[i] for i in keep], pixels, labels


@torch.no_grad()
def _accuracy(models, pixels, labels, batch_size: int, device) -> dict[str, float]:
    """Top-1 and top-5 of θ0 and θ on the test images (Heo Table 3), as fractions."""
    out = {}
    for name, model in zip(("init", "final"), models):
        top1 = top5 = 0
        for i in range(0, len(pixels), batch_size):
            logits = model(pixels[i : i + batch_size].to(device))
            y = labels[i : i + batch_size].to(device)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += int((top[:, 0] == y).sum())
            top5 += int((top == y[:, None]).any(dim=1).sum())
        suffix = "_init" if name == "init" else ""
        out[f"acc{suffix}"], out[f"acc_top5{suffix}"] = top1 / len(pixels), top5 / len(pixels)
    return out


def _maps(spec, interp, model, x, target) -> torch.Tensor:
    from shared.interpreters import get_interpreter

    return get_interpreter(interp)().heatmap(model, spec.model, x, target, layer=spec.layer).detach()


def _passive_rows(spec, models, ids, pixels, labels, device) -> dict[str, list]:
    kinds = (spec.kind,) if spec.kind is not None else PASSIVE
    rows: dict[str, list] = {"image_id": [], "interpreter": [], "kind": [], "t": [], "fooled": []}
    for i in range(0, len(pixels), spec.batch_size):
        x, y = pixels[i : i + spec.batch_size].to(device), labels[i : i + spec.batch_size].to(device)
        for interp in spec.interpreters:
            h0, h = (_maps(spec, interp, m, x, y) for m in models)
            for kind in kinds:
                t = _test_loss(kind, h, h0)
                _append(rows, ids[i : i + len(x)], interp, kind, t)
    return rows


def _test_loss(kind: str, h: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """t_i of §6's FSR for one passive kind."""
    if kind == "location":
        return location_loss(h)
    if kind == "topk":
        return topk_loss(h, topk_mask(h0))
    if kind == "center_mass":
        return center_mass_test_loss(h, h0)
    raise ValueError(f"unknown passive fooling kind {kind!r}; valid: {', '.join(PASSIVE)}")


def _active_rows(spec, models, cx, c1, c2, device) -> dict[str, list]:
    rows: dict[str, list] = {"image_id": [], "interpreter": [], "kind": [], "t": [], "fooled": []}
    for i in range(0, len(cx), spec.batch_size):
        x = cx[i : i + spec.batch_size].to(device)
        a, b = c1[i : i + len(x)].to(device), c2[i : i + len(x)].to(device)
        names = [f"collage-{j}" for j in range(i, i + len(x))]
        for interp in spec.interpreters:
            (h0_1, h0_2), (h_1, h_2) = (
                (_maps(spec, interp, m, x, a), _maps(spec, interp, m, x, b)) for m in models
            )
            t1, t2 = active_test_loss(h_1, h_2, h0_1, h0_2)
            _append(rows, [f"{n}/c1" for n in names], interp, "active", t1)
            _append(rows, [f"{n}/c2" for n in names], interp, "active", t2)
    return rows


def _append(rows: dict[str, list], ids: list[str], interp: str, kind: str, t: torch.Tensor) -> None:
    lo, hi = FSR_RANGES[kind]
    values = t.detach().float().cpu().tolist()
    rows["image_id"] += ids
    rows["interpreter"] += [interp] * len(ids)
    rows["kind"] += [kind] * len(ids)
    rows["t"] += values
    rows["fooled"] += [bool(lo <= v <= hi) for v in values]  # NaN (a constant map) is not fooled


def _fsr(table: pa.Table) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    d = table.to_pydict()
    for kind, interp, fooled in zip(d["kind"], d["interpreter"], d["fooled"]):
        out.setdefault(kind, {}).setdefault(interp, []).append(fooled)  # type: ignore[arg-type]
    return {k: {i: float(np.mean(v)) for i, v in per.items()} for k, per in out.items()}


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _picture(spec, models, x, y, device) -> bytes | None:
    """Heo Fig. 2: per image, each interpreter's map before and after (PNG), or None when asked for none."""
    if spec.picture_images == 0 or len(x) == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.interpreters import upsample

    pre = model_info(spec.model).preprocess
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    cols = 1 + 2 * len(spec.interpreters)
    fig, axes = plt.subplots(len(x), cols, figsize=(1.6 * cols, 1.6 * len(x)), squeeze=False)
    maps = {(interp, s): upsample(_maps(spec, interp, m, x.to(device), y.to(device)), x.shape[-1]).cpu()
            for interp in spec.interpreters for s, m in zip(("before", "after"), models)}  # fmt: skip
    for r in range(len(x)):
        img = (x[r] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        axes[r][0].imshow(img)
        for j, interp in enumerate(spec.interpreters):
            for k, s in enumerate(("before", "after")):
                ax = axes[r][1 + 2 * j + k]
                ax.imshow(img)
                ax.imshow(maps[(interp, s)][r].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                if r == 0:
                    ax.set_title(f"{interp} {s}", fontsize=7)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle(f"{spec.model}: {spec.kind or 'control'} fooling, maps before / after", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def summary(res: SaliencyEvalResult, kind: str | None, interpreter: str) -> dict[str, Any]:
    """Final metrics: ``fsr`` (matched interpreter), ``fsr.{interp}`` (transfer), accuracies and deltas."""
    out: dict[str, Any] = {}
    if kind is not None:
        out["fsr"] = res.fsr.get(kind, {}).get(interpreter)
        out |= {f"fsr.{i}": v for i, v in res.fsr.get(kind, {}).items()}
    else:  # the control: every passive kind's test loss, matched interpreter first
        out["fsr"] = max(res.fsr.get(k, {}).get(interpreter, 0.0) for k in res.fsr)
        out |= {f"fsr.{k}.{i}": v for k, per in res.fsr.items() for i, v in per.items()}
    a = res.acc
    out |= {"acc": 100 * a["acc"], "acc_init": 100 * a["acc_init"], "delta_acc": 100 * (a["acc"] - a["acc_init"]),
            "acc_top5": 100 * a["acc_top5"], "acc_top5_init": 100 * a["acc_top5_init"],
            "delta_acc_top5": 100 * (a["acc_top5"] - a["acc_top5_init"])}  # fmt: skip
    return {k: float(v) for k, v in out.items() if v is not None}
