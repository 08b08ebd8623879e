"""Synthetic feature visualisation of a model's units (SCIENCE.md §5), committed to the store.

Output: ``{store}/featureviz/{key}/`` with ``pixels.npz`` (``images`` float32
``[U, 3, H, W]`` in ``[0, 1]``, ``units``), ``units.parquet`` (``unit``,
``activation`` = the §5 objective reached, ``score`` = the §1 unit score, ``png`` =
the image as 8-bit PNG bytes), ``grid.png`` and ``_MANIFEST.json`` written last; a
finished key is reused. :func:`compare_featureviz` compares two renderings of the same
units (before / after an attack, thesis Fig. 3.7); :func:`comparison_rows` puts them beside the
units' natural top images in one picture.
"""

from __future__ import annotations

import io
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from shared import store
from shared.device import pick_device
from shared.embedders.base import Embedder
from shared.featureviz import RenderConfig, Rendering, UnitComparison, compare_renderings, render_units
from shared.featureviz.compare import to_pil
from shared.grid import GridRow, render_grid
from shared.hooks import unit_count
from shared.models.zoo import build_model, model_info
from shared.progress import Progress, no_progress

CODE_VERSION = "featureviz-v1"  # bump when the pixels a spec produces change
EXECUTION_ONLY = {"device", "batch_units"}
FILES = ["pixels.npz", "units.parquet", "grid.png"]
GRID_COLUMNS = 8
_WEIGHTS_NAME = re.compile(r"^(\w+_Weights\.)?[A-Z][A-Z0-9_]*$")  # same rule as shared.models.zoo.build_model


@dataclass(frozen=True)
class FeatureVizSpec:
    """What determines a set of synthetic images (all but the execution settings go into the key)."""

    model: str  # registered model name, e.g. "alexnet_mini"
    weights: str | None  # checkpoint path / URI, a torchvision weights name, or None (seeded random init)
    layer: str  # layer alias or module path, e.g. "conv5"
    units: tuple[int, ...] | None = None  # None: every unit of the layer
    model_key: str | None = None  # content key of the weights (variant / attack state); None: the weights URI
    steps: int = 512  # Adam steps (SCIENCE.md §5)
    lr: float = 0.05  # Adam learning rate (SCIENCE.md §5)
    seed: int = 0  # each unit's start and transforms
    size: int | None = None  # image side; None: the model's input crop
    # Execution settings: a unit's image does not depend on them.
    device: str = field(default="auto", compare=False)  # "auto": CUDA when present, else CPU
    batch_units: int = field(default=64, compare=False)  # units per optimisation (memory bound)

    def __post_init__(self) -> None:
        model_info(self.model)  # unknown names fail here, listing the valid ones
        RenderConfig(steps=self.steps, lr=self.lr, seed=self.seed)  # validates them
        if not isinstance(self.batch_units, int) or self.batch_units < 1:
            raise ValueError(f"FeatureVizSpec.batch_units={self.batch_units!r}: must be an integer >= 1")
        if self.units is not None:
            object.__setattr__(self, "units", tuple(int(u) for u in self.units))

    def key(self) -> str:
        ident = {k: v for k, v in asdict(self).items() if k not in EXECUTION_ONLY}
        if ident["model_key"] is None and self.weights is not None and not _is_weights_name(self.weights):
            ident["weights"] = store.normalize(self.weights)
        return store.content_key(ident, CODE_VERSION)

    def render_config(self) -> RenderConfig:
        return RenderConfig(steps=self.steps, lr=self.lr, seed=self.seed, size=self.size)


@dataclass
class FeatureVizResult:
    uri: str  # folder with the images and the manifest
    key: str
    rendering: Rendering
    reused: bool
    seconds: float


def _is_weights_name(weights: str) -> bool:
    """A torchvision weights name ("DEFAULT", "AlexNet_Weights.IMAGENET1K_V1"), as build_model tells them apart."""
    return bool(_WEIGHTS_NAME.match(weights)) and not os.path.exists(weights)


def featureviz_dir(store_uri: str, key: str) -> str:
    return store.join(store_uri, "featureviz", key)


def load_model(spec: FeatureVizSpec) -> nn.Module:
    """The model of ``spec`` in eval mode on the chosen device (a None-weights model is seeded by spec.seed)."""
    if spec.weights is None:
        torch.manual_seed(spec.seed)
    model, _ = build_model(spec.model, weights=spec.weights)
    return model.eval().to(pick_device(spec.device))


def run_featureviz(
    spec: FeatureVizSpec, store_uri: str, progress: Progress = no_progress, model: nn.Module | None = None
) -> FeatureVizResult:
    """Render ``spec.units`` of ``spec.layer`` (or reuse a finished run) and commit the images.

    ``model``: an already built model for ``spec`` (skips loading; it must be what spec names).
    """
    t0 = time.time()
    key = spec.key()
    out = featureviz_dir(store_uri, key)
    done = store.read_manifest(out)
    if done is not None and done.get("key") == key:
        return FeatureVizResult(out, key, read_featureviz(out), True, time.time() - t0)
    model = load_model(spec) if model is None else model
    units = (
        list(spec.units) if spec.units is not None else list(range(unit_count(spec.model, spec.layer, model)))
    )
    parts = []
    for start in range(0, len(units), spec.batch_units):
        chunk = units[start : start + spec.batch_units]

        def report(step: int, total: int, _done: int = start, _n: int = len(chunk)) -> None:
            progress(_done * total + step * _n, len(units) * total, phase="featureviz")

        parts.append(render_units(model, spec.model, spec.layer, chunk, spec.render_config(), report))
    rendering = Rendering(
        layer=spec.layer,
        units=units,
        images=torch.cat([p.images for p in parts]),
        activation=torch.cat([p.activation for p in parts]),
        score=torch.cat([p.score for p in parts]),
        seconds=time.time() - t0,
    )
    _commit(out, key, spec, rendering, str(next(model.parameters()).device))
    return FeatureVizResult(out, key, rendering, False, time.time() - t0)


def _commit(out: str, key: str, spec: FeatureVizSpec, rendering: Rendering, device: str) -> None:
    """The files, then the manifest (last: nothing half-written looks done)."""
    _write(out, rendering, title=f"{spec.model} {spec.layer}: synthetic images (activation reached)")
    store.write_manifest(
        out,
        {
            "kind": "featureviz", "key": key, "model": spec.model, "weights": spec.weights, "layer": spec.layer,
            "units": rendering.units, "spec": asdict(spec), "files": FILES, "code_version": CODE_VERSION,
            "device": device, "seconds": rendering.seconds,
        },
    )  # fmt: skip


def run_featureviz_units(
    spec: FeatureVizSpec, store_uri: str, model: nn.Module | None = None
) -> tuple[Rendering, int]:
    """``spec.units``, each committed under its own key (the spec with that one unit), and how many were
    rendered now: the missing ones, batched by ``batch_units``.

    Why per unit: a unit's image does not depend on the others in its batch, so a model's renders are
    reused by any later request that names the unit (e.g. θ0's, by every attack of a variant).
    """
    if not spec.units:
        raise ValueError(f"run_featureviz_units needs FeatureVizSpec.units, got {spec.units!r}")
    one = {u: replace(spec, units=(u,)) for u in spec.units}
    done = {u: s.key() for u, s in one.items()}
    missing = [
        u
        for u, k in done.items()
        if (store.read_manifest(featureviz_dir(store_uri, k)) or {}).get("key") != k
    ]
    if missing:
        model = load_model(spec) if model is None else model
        device = str(next(model.parameters()).device)
        for start in range(0, len(missing), spec.batch_units):
            chunk = missing[start : start + spec.batch_units]
            r = render_units(model, spec.model, spec.layer, chunk, spec.render_config())
            for i, u in enumerate(chunk):
                part = Rendering(r.layer, [u], r.images[i : i + 1], r.activation[i : i + 1], r.score[i : i + 1],
                                 r.seconds / len(chunk))  # fmt: skip
                _commit(featureviz_dir(store_uri, done[u]), done[u], one[u], part, device)
    parts = [read_featureviz(featureviz_dir(store_uri, done[u])) for u in spec.units]
    rendering = Rendering(
        layer=spec.layer, units=list(spec.units), images=torch.cat([p.images for p in parts]),
        activation=torch.cat([p.activation for p in parts]), score=torch.cat([p.score for p in parts]),
        seconds=sum(p.seconds for p in parts),
    )  # fmt: skip
    return rendering, len(missing)


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _write(out: str, r: Rendering, title: str) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, images=r.images.numpy().astype(np.float32), units=np.asarray(r.units, np.int64))
    store.write_bytes(store.join(out, "pixels.npz"), buf.getvalue())
    pils = to_pil(r.images)
    table = pa.table(
        {
            "unit": pa.array(r.units, pa.int64()),
            "activation": pa.array(r.activation.numpy(), pa.float32()),
            "score": pa.array(r.score.numpy(), pa.float32()),
            "png": pa.array([_png(im) for im in pils], pa.binary()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.write_bytes(store.join(out, "units.parquet"), sink.getvalue().to_pybytes())
    rows = []
    for s in range(0, len(r.units), GRID_COLUMNS):
        sl = slice(s, s + GRID_COLUMNS)
        caps = [f"unit {u}\n{a:.3g}" for u, a in zip(r.units[sl], r.activation[sl].tolist())]
        rows.append(GridRow(f"units {r.units[s]}…", pils[sl], caps))
    store.write_bytes(store.join(out, "grid.png"), render_grid(rows, title=title, columns=GRID_COLUMNS))


def read_featureviz(uri: str) -> Rendering:
    """A committed rendering: images from ``pixels.npz``, activation and score from ``units.parquet``."""
    m = store.read_manifest(uri)
    if m is None:
        raise store.StoreError(
            f"no committed feature visualisation at {uri} (no _MANIFEST.json): run it first"
        )
    with np.load(io.BytesIO(store.read_bytes(store.join(uri, "pixels.npz")))) as z:
        images, units = torch.from_numpy(z["images"]), [int(u) for u in z["units"]]
    table = pq.read_table(io.BytesIO(store.read_bytes(store.join(uri, "units.parquet"))))
    return Rendering(
        layer=m["layer"],
        units=units,
        images=images,
        activation=torch.from_numpy(table.column("activation").to_numpy().copy()),
        score=torch.from_numpy(table.column("score").to_numpy().copy()),
        seconds=float(m.get("seconds", 0.0)),
    )


def compare_featureviz(
    before_uri: str, after_uri: str, embedder: Embedder, device: str = "auto"
) -> UnitComparison:
    """Per unit: activation reached on each model and the embedding cosine of the two synthetic images (§5).

    ``before_uri`` / ``after_uri``: committed renderings of the same model architecture, layer and
    units (e.g. the initial and the attacked weights); ``embedder``: any :class:`Embedder`
    (the "reference" one needs a trained checkpoint, so it is passed in built).
    """
    mb, ma = store.read_manifest(before_uri), store.read_manifest(after_uri)
    for uri, m in ((before_uri, mb), (after_uri, ma)):
        if m is None:
            raise store.StoreError(f"no committed feature visualisation at {uri}: run run_featureviz first")
    for field_name in ("model", "layer", "units"):
        if mb[field_name] != ma[field_name]:
            raise ValueError(
                f"cannot compare renderings with different {field_name}: {mb[field_name]!r} ({before_uri}) vs "
                f"{ma[field_name]!r} ({after_uri}); render the same model, layer and units for both"
            )
    models = [
        load_model(FeatureVizSpec(**{**m["spec"], "units": tuple(m["units"]), "device": device}))
        for m in (mb, ma)
    ]
    rb, ra = read_featureviz(before_uri), read_featureviz(after_uri)
    return compare_renderings(
        mb["model"], mb["layer"], rb.units, (models[0], rb.images), (models[1], ra.images), embedder
    )


def comparison_rows(
    before: Rendering,
    after: Rendering,
    cmp: UnitComparison,
    natural: dict[int, tuple[GridRow, GridRow]] | None = None,
    n: int = 5,
) -> list[GridRow]:
    """Per unit of ``cmp`` a "before" and an "after" row: its ``n`` natural top images on that model
    (``natural[unit]``: the rows of jobs.before_after.before_after_rows; blank cells where missing),
    then its synthetic image on the same model, captioned with the activation it reached (and, after,
    the embedding cosine of the two synthetic images). Column ``n``: the synthetic images."""
    pb, pa_ = to_pil(before.images), to_pil(after.images)
    natural = natural or {}
    rows = []
    for i, u in enumerate(cmp.units):
        nat = natural.get(u, (GridRow(f"unit {u}\nbefore", [], []), GridRow("after", [], [])))
        syn = (
            (pb[i], f"synthetic θ0\nact {cmp.act_before[i]:.3g}"),
            (pa_[i], f"synthetic θ\nact {cmp.act_after[i]:.3g}, cos {cmp.cosine[i]:.2f}"),
        )
        for row, (image, caption) in zip(nat, syn):
            rows.append(GridRow(row.title, [*_fit(row.images, n, None), image],
                                [*_fit(row.captions, n, ""), caption], [*_fit(row.marked, n, False), False]))  # fmt: skip
    return rows


def _fit(cells, n: int, blank) -> list:
    """The first ``n`` cells, padded with ``blank``."""
    return [*cells[:n], *[blank] * (n - len(cells[:n]))]
