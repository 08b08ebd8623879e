"""What both executors of the input family's job share: the images, the per-batch attack, the table.

The driver (the trial, or a CLI process) draws the images and their targets once
(:func:`prepare`) and cuts them into input batches (:func:`input_batches`: one Arrow table of
``batch_size`` rows each, pixels as float32 bytes); ``local`` attacks them in the calling process,
``ray-data`` in an actor pool; both call :func:`attack_batch` on the same batches, so the rows
are the same, and :func:`assemble` puts them back in image order. The images are decoded on the
driver because which images decode and their random targets (drawn over the decoded ones) define
the table; decoding ``images`` validation images costs little next to hundreds of attack steps each.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import torch

from shared.models.zoo import build_model, model_info
from shared.perturb import Victim, check_targets, make_victim, random_targets

ROW, PIXELS, SHOWN = "_row", "_x", "_shown"  # helper columns, never in the committed table
KEEP = ("image_id", "label", "target", "clean_pred")  # not image means: left out of the summary


def load_victim(model: str, weights: str, interpreter: str, layer: str, device: torch.device) -> Victim:
    """The attacked model, in eval mode on ``device``, with the interpreter whose maps are compared."""
    net = build_model(model, weights=weights)[0].to(device).eval()
    return make_victim(net, model, interpreter, layer)


def prepare(spec, victim: Victim, device) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attacked images in [0, 1] pixels, their labels and targets (a fixed target skips its own class)."""
    from jobs.saliency_eval import split_images

    ids, pixels, labels = split_images(spec.dataset, spec.split, spec.model, spec.images, spec.seed)
    pre = model_info(spec.model).preprocess
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    x = (pixels * std + mean).clamp(0, 1)
    with torch.no_grad():
        classes = int(victim.model(pixels[:1].to(device)).shape[1])
    if spec.target == "random":
        targets = random_targets(labels, classes, torch.Generator().manual_seed(spec.seed))
        return ids, x, labels, targets
    targets = check_targets(int(spec.target), len(labels), classes, torch.device("cpu"))
    keep = (labels != targets).nonzero().flatten()
    if len(keep) == 0:
        raise ValueError(f"every attacked image is of the target class {spec.target}: nothing to attack")
    return [ids[i] for i in keep.tolist()], x[keep], labels[keep], targets[keep]


def input_batches(
    ids: list[str], x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> list[pa.Table]:
    """The job's input: one table per batch (row position, id, label, target, float32 pixel bytes)."""
    out = []
    for i in range(0, len(ids), batch_size):
        xb = x[i : i + batch_size].contiguous().numpy().astype(np.float32, copy=False)
        out.append(
            pa.table({
                ROW: pa.array(range(i, i + len(xb)), pa.int64()),
                "image_id": ids[i : i + batch_size],
                "label": labels[i : i + batch_size].tolist(),
                "target": targets[i : i + batch_size].tolist(),
                PIXELS: pa.array([a.tobytes() for a in xb], pa.binary()),
            })
        )  # fmt: skip
    return out


def attack_batch(
    victim: Victim, perturbation, batch: pa.Table, device, shape: tuple[int, ...], picture_images: int
) -> pa.Table:
    """One batch's per-image columns (and, for the pictures' images, their attack images in ``_shown``)."""
    rows = batch.column(ROW).to_pylist()
    raw = batch.column(PIXELS).to_pylist()
    x = torch.from_numpy(np.stack([np.frombuffer(b, np.float32).reshape(shape) for b in raw])).to(device)
    yb = torch.tensor(batch.column("label").to_pylist(), dtype=torch.int64, device=device)
    tb = torch.tensor(batch.column("target").to_pylist(), dtype=torch.int64, device=device)
    cols = perturbation.attack(victim, x, yb, tb)
    cols["clean_pred"] = victim.logits(x).argmax(1)
    columns: dict[str, list] = {ROW: rows, "image_id": batch.column("image_id").to_pylist(),
                                "label": yb.tolist(), "target": tb.tolist()}  # fmt: skip
    _collect(columns, cols)
    shown = {k: v.detach().cpu() for k, v in cols.items() if v.dim() == 4 or k.startswith("region_")}
    columns[SHOWN] = [_tensors({k: v[j] for k, v in shown.items()}) if r < picture_images else None
                      for j, r in enumerate(rows)]  # fmt: skip
    return pa.table(
        {**{k: v for k, v in columns.items() if k != SHOWN}, SHOWN: pa.array(columns[SHOWN], pa.binary())}
    )


def assemble(tables: list[pa.Table]) -> tuple[pa.Table, dict[str, torch.Tensor]]:
    """The per-image table in image order, without the helper columns, and the pictures' tensors."""
    table = pa.concat_tables(tables, promote_options="default").sort_by(ROW)
    per_row = [_untensors(b) for b in table.column(SHOWN).to_pylist() if b is not None]
    shown = {k: torch.stack([r[k] for r in per_row]) for k in (per_row[0] if per_row else {})}
    return table.drop_columns([ROW, SHOWN]), shown


def summary(table: pa.Table) -> dict[str, float]:
    """Image means of every scalar column (non-finite values, e.g. an Adv² image never on target, left out)."""
    columns = table.to_pydict()
    out: dict[str, float] = {"images": float(len(columns["image_id"]))}
    for k, values in columns.items():
        if k in KEEP or not values or isinstance(values[0], list):
            continue
        finite = [float(v) for v in values if math.isfinite(float(v))]
        if finite:
            out[k] = sum(finite) / len(finite)
    pred, label = columns["clean_pred"], columns["label"]
    out["clean_acc"] = sum(p == y for p, y in zip(pred, label)) / len(label)
    return out


def _collect(columns: dict[str, list], cols: dict[str, torch.Tensor]) -> None:
    """Per-image columns: [N] values, [N, R] as lists (PSE's regions); images stay out of the table."""
    for k, v in cols.items():
        if v.dim() > 2:
            continue
        v = v.detach().cpu()
        v = v.float() if v.dtype.is_floating_point else v
        columns.setdefault(k, []).extend(v.tolist())


def _tensors(d: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.clone() for k, v in d.items()}, buf)
    return buf.getvalue()


def _untensors(b: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(b), weights_only=True)
