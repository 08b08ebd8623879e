"""The metrics stage (SCIENCE.md §3): activation tables of θ0 and θ -> per-unit metrics, Acc, pictures.

For each (layer, split) it writes
``{store}/metrics/model={variant}/state={final_state}/layer={layer}/split={split}/`` with
``unit_metrics.parquet`` (unit, kendall_tau, kendall_tau_w, clip_delta, clip_w, topk_overlap,
[decoy_top5,] dead_init, dead_final; one row per attacked unit), then ``_MANIFEST.json`` (layer
means, Acc, ΔAcc, the embedder's description, the units to picture, the key), then the picture of
those units, ``before_after.png`` and ``.pdf`` (:func:`draw_pictures`; a sweep draws it after the
trial, once the trial's GPU is free). A rerun with
the same key is skipped before Ray or the embedder is touched.

- Kendall-τ and Kτ-W run over ``D_τ``, a seeded random subset of V chosen by image id from
  the split's image index (so it is the same for every model). ActivationsSpec.limit keeps
  the *first* N images, which is not a random subset, so the full V tables are computed
  (they are needed for V's top-k anyway) and restricted to the D_τ rows. D_τ ⊂ V, so the
  two Kendall columns are the same for every reported split; they are computed once per layer.
- CLIP-δ, CLIP-W and the top-k overlap use the top-k sets of the reported split; every
  unique top-k image of a split is fetched by id and embedded once for all layers.
- Acc / ΔAcc: top-1 of θ0 and θ on the whole of V (jobs.accuracy, cached per model state).
- Dead units (§3): ``dead_init``/``dead_final`` per split, read off the top-k scores (scores are
  squared norms, so a top score of 0 means 0 on every image). Layer means run over the units
  alive in both states; the means also carry ``units_dead_init`` and ``units_killed``.
- ``decoy_top5`` (push-up, thesis Fig. H), when ``decoy_class`` is set: per unit, a decoy-class
  image in the final top-5 of the split; its layer mean is the share of the alive attacked units.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.accuracy import run_accuracy
from jobs.activations import ActivationsSpec, run_activations, table_uri
from jobs.before_after import PICTURE, draw_committed, pdf_uri, pick_units
from jobs.embedding_cache import embed_cached
from jobs.metrics_inputs import (
    DECOY_TOP,
    emb_array,
    set_array,
    tau_scores,
    tau_subset,
    unit_states,
)
from jobs.topk import run_topk
from shared import integrity, store, timing
from shared.metrics import (
    alive_units,
    clip_delta,
    clip_matrix,
    clip_w,
    delta_acc,
    layer_means,
    topk_overlap,
    unit_metrics,
    unit_state_columns,
)
from shared.progress import Progress, no_progress

CODE_VERSION = "metrics-v2"  # v2: dead units out of the means, their counts, decoy_top5
TABLE = "unit_metrics.parquet"
PICTURE_PDF = "before_after.pdf"  # the same picture as vector PDF (before_after.pdf_uri of PICTURE)
EXECUTION_ONLY = ("device", "batch_size", "embed_batch_size", "num_actors", "label")
STATES = ("init", "final")


@dataclass(frozen=True)
class MetricsSpec:
    """Everything that determines the metrics of one attacked model (all but EXECUTION_ONLY is keyed)."""

    dataset: str  # dataset root URI (any layout shared.datasets reads)
    model: str  # registered model name, e.g. "alexnet_mini"
    variant_key: str  # content key of the variant θ0 belongs to (its tables live under model={variant_key})
    init_weights: str  # checkpoint URI (or torchvision weights name) of θ0
    final_weights: str  # checkpoint URI of θ, e.g. {store}/models/{attack key}/model.pt
    final_state_key: str  # state key of θ's tables: the attack's content key
    layers: tuple[str, ...] = ("conv5",)  # layer aliases to report (the attacked layers)
    units: str | tuple[int, ...] = "all"  # the attacked units: "all" or unit indices (rows of the tables)
    k: int = 10  # size of the top-k sets T_j (SCIENCE.md §1)
    tau_images: int = 10_000  # |D_τ|: seeded random subset of val_split for Kendall-τ (all when smaller)
    tau_seed: int = 0  # seed that picks D_τ
    val_split: str = "val"  # V: the split D_τ and the accuracy come from
    splits: tuple[str, ...] = ("train", "val")  # reported splits: train = attacked set, val = generalization
    embedder: str | Mapping[str, Any] = "open_clip:ViT-B-32:openai"  # e(x) spec (shared.embedders)
    # units in before_after.png: a count (the attacked units with the highest CLIP-δ; 0 = none) or the
    # units themselves (those of them the layer's table holds are shown)
    picture_units: int | tuple[int, ...] = 4
    picture_k: int = 5  # images per row in before_after.png (top-5 in pictures, SCIENCE.md §1)
    decoy_class: int | None = None  # label of the decoy class (push-up): decoy_top5 is computed; None: not
    # Execution settings: they do not change the result, so they stay out of the key.
    device: str = field(default="auto", compare=False)  # forward passes and the embedder
    batch_size: int = field(default=256, compare=False)  # images per forward in activations / accuracy
    embed_batch_size: int = field(default=64, compare=False)  # images per embedder forward
    num_actors: int | None = field(default=None, compare=False)  # forward actors (None: one per GPU/CPU)
    label: str = field(default="", compare=False)  # the attack as the picture's title names it ("" : the key)

    def __post_init__(self) -> None:
        from shared.embedders import parse_spec
        from shared.models.zoo import model_info

        info = model_info(self.model)  # unknown models fail here, listing the valid ones
        for name, example in (("layers", ["conv5"]), ("splits", ["train", "val"])):
            value = getattr(self, name)
            if isinstance(value, str) or not value:
                raise ValueError(f"MetricsSpec.{name}={value!r}: give a non-empty list, e.g. {example}")
            object.__setattr__(self, name, tuple(dict.fromkeys(value)))
        for layer in self.layers:
            info.resolve_layer(layer)  # LayerError lists the aliases
        if self.units != "all":
            ok = not isinstance(self.units, str) and self.units and all(_is_index(u) for u in self.units)
            if not ok:
                raise ValueError(
                    f"MetricsSpec.units={self.units!r}: 'all' or a non-empty list of unit indices >= 0"
                )
            object.__setattr__(self, "units", tuple(sorted({int(u) for u in self.units})))
        for name in ("k", "tau_images", "picture_k", "batch_size", "embed_batch_size"):
            if not (_is_index(getattr(self, name)) and getattr(self, name) >= 1):
                raise ValueError(f"MetricsSpec.{name}={getattr(self, name)!r}: must be an integer >= 1")
        if self.decoy_class is not None and not (_is_index(self.decoy_class) and self.k >= DECOY_TOP):
            raise ValueError(
                f"MetricsSpec.decoy_class={self.decoy_class!r} with k={self.k}: a class label >= 0 and "
                f"k >= {DECOY_TOP} (decoy_top5 looks at the top-{DECOY_TOP}), or None for no decoy_top5"
            )
        chosen = isinstance(self.picture_units, tuple) and self.picture_units
        if not (_is_index(self.picture_units) or (chosen and all(_is_index(u) for u in chosen))):
            raise ValueError(
                f"MetricsSpec.picture_units={self.picture_units!r}: an integer >= 0 (0: no picture) "
                f"or a non-empty tuple of unit indices"
            )
        if self.final_state_key == "init":
            raise ValueError("MetricsSpec.final_state_key='init' is θ0's own state; pass the attack's key")
        parse_spec(_embedder_spec(self.embedder))  # unknown embedders fail here, listing the valid ones

    def identity(self) -> dict[str, Any]:
        """The keyed fields, less layers and splits: each (layer, split) folder has its own key."""
        skip = {*EXECUTION_ONLY, "layers", "splits"}
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def activations(self, state: str, split: str) -> ActivationsSpec:
        """The activation tables of θ0 (``state="init"``) or θ (``"final"``) on ``split``."""
        final = state == "final"
        return ActivationsSpec(
            dataset=self.dataset, split=split, model=self.model,
            weights=self.final_weights if final else self.init_weights, variant_key=self.variant_key,
            layers=self.layers, state_key=self.final_state_key if final else "init",
            batch_size=self.batch_size, num_actors=self.num_actors, device=self.device,
        )  # fmt: skip


@dataclass
class LayerSplitMetrics:
    """The stage's output for one (layer, split)."""

    layer: str
    split: str
    uri: str  # metrics folder: unit_metrics.parquet, before_after.png, _MANIFEST.json
    table_uri: str  # the per-unit Parquet table
    picture_uri: str | None  # before_after.png, None when picture_units = 0
    picture_units: list[int]  # the units shown in it
    means: dict[str, float]  # layer figures over the attacked units alive in both states, and the dead counts
    acc: float  # Acc(θ) on V, %
    acc_init: float  # Acc(θ0) on V, %
    delta_acc: float  # Acc(θ) − Acc(θ0), percentage points
    key: str
    skipped: bool

    def metrics(self) -> dict[str, float]:
        return {**self.means, "acc": self.acc, "delta_acc": self.delta_acc}


@dataclass
class MetricsResult:
    per: dict[tuple[str, str], LayerSplitMetrics]  # (layer, split) -> its metrics
    activations: dict[tuple[str, str], dict[str, str]]  # (state "init"/"final", split) -> layer -> table URI
    skipped: bool  # True when every (layer, split) was already committed
    seconds: float

    def flat(self) -> dict[str, float]:
        """``{layer}/{split}/{metric}`` -> layer figure, and ``acc``, ``acc_init``, ``delta_acc`` (MLflow)."""
        out = {f"{ly}/{sp}/{n}": v for (ly, sp), m in self.per.items() for n, v in m.means.items()}
        first = next(iter(self.per.values()))
        return {**out, "acc": first.acc, "acc_init": first.acc_init, "delta_acc": first.delta_acc}


def metrics_uri(store_uri: str, variant_key: str, state_key: str, layer: str, split: str) -> str:
    return store.join(
        store_uri, "metrics", f"model={variant_key}", f"state={state_key}", f"layer={layer}", f"split={split}"
    )


def _is_index(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0


def _needed_splits(spec: MetricsSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*spec.splits, spec.val_split)))


def _stage_key(
    spec: MetricsSpec, layer: str, split: str, act_keys: dict[tuple[str, str], dict[str, str]]
) -> str:
    inputs = {f"{st}/{sp}": act_keys[(st, sp)][layer] for st in STATES for sp in {split, spec.val_split}}
    return store.content_key(spec.identity(), layer, split, inputs, CODE_VERSION)


def _lookup(spec: MetricsSpec, store_uri: str):
    """Keys, folders and the already-committed (layer, split) results of ``spec``."""
    from shared.dataset_meta import dataset_id

    ds_id = dataset_id(spec.dataset)
    acts, act_keys = {}, {}
    for st in STATES:
        for sp in _needed_splits(spec):
            a = spec.activations(st, sp)
            act_keys[(st, sp)] = {ly: a.key(ds_id, ly) for ly in spec.layers}
            acts[(st, sp)] = {
                ly: table_uri(store_uri, spec.variant_key, ly, a.state_key, sp) for ly in spec.layers
            }
    keys = {(ly, sp): _stage_key(spec, ly, sp, act_keys) for ly in spec.layers for sp in spec.splits}
    dirs = {ls: metrics_uri(store_uri, spec.variant_key, spec.final_state_key, *ls) for ls in keys}
    per: dict[tuple[str, str], LayerSplitMetrics] = {}
    for ls in keys:
        m = integrity.intact_manifest(dirs[ls])  # damaged files: not done, computed again
        if m is not None and m.get("key") == keys[ls]:
            per[ls] = _from_manifest(ls, dirs[ls], m)
    return acts, keys, dirs, per


def committed_metrics(spec: MetricsSpec, store_uri: str) -> MetricsResult | None:
    """The stage's result when every (layer, split) is committed, else None (reads manifests only)."""
    acts, keys, _, per = _lookup(spec, store_uri)
    if len(per) < len(keys):
        return None
    return MetricsResult({ls: per[ls] for ls in keys}, acts, True, 0.0)


def run_metrics(
    spec: MetricsSpec, store_uri: str, progress: Progress = no_progress, pictures: bool = True
) -> MetricsResult:
    """Compute (or reuse) the §3 metrics of each (layer, split); needs Ray unless all are committed.

    ``pictures``: draw each (layer, split)'s before/after picture too (:func:`draw_pictures`); a
    sweep's trial passes False and its driver has them drawn once the trial has freed its GPU.
    """
    t0 = time.time()
    acts, keys, dirs, per = _lookup(spec, store_uri)
    pending = [ls for ls in keys if ls not in per]
    if pending:
        from jobs.raysetup import ensure_ray

        ensure_ray()
        per.update(_compute(spec, store_uri, pending, dirs, keys, progress))
    result = MetricsResult({ls: per[ls] for ls in keys}, acts, not pending, time.time() - t0)
    if pictures:
        draw_pictures(result)
    return result


def draw_pictures(result: MetricsResult) -> list[tuple[str, str]]:
    """Each (layer, split)'s before/after picture, drawn unless it already is; returns
    ``(uri, "{layer}_{split}_before_after.{png|pdf}")`` for every PNG and PDF."""
    out = []
    for (layer, split), m in result.per.items():
        png = draw_committed(m.uri)
        if png is not None:
            out += [(png, f"{layer}_{split}_{PICTURE}"), (pdf_uri(png), f"{layer}_{split}_{PICTURE_PDF}")]
    return out


def _compute(spec, store_uri, pending, dirs, keys, progress) -> dict[tuple[str, str], LayerSplitMetrics]:
    from shared.embedders import get_embedder

    with timing.part("tables"):  # the forward passes over whole splits: tables, and Acc on V
        tables = {
            (st, sp): run_activations(
                spec.activations(st, sp), store_uri, _tagged(progress, state=st, split=sp)
            ).tables
            for st in STATES
            for sp in _needed_splits(spec)
        }
        accs = tuple(_accuracy(spec, st, store_uri, _tagged(progress, state=st)) for st in STATES)
    topk = {(st, ly, sp): run_topk(tables[(st, sp)][ly], spec.k).table for st in STATES for ly, sp in pending}
    embedder = get_embedder(_embedder_spec(spec.embedder), device=spec.device)
    emb = {}
    for split in dict.fromkeys(sp for _, sp in pending):  # each unique top-k image of a split once
        ids = {i for (_, _, sp), t in topk.items() if sp == split for i in t.column("image_id").to_pylist()}
        emb[split] = embed_cached(
            embedder, spec.dataset, split, sorted(ids), store_uri, spec.embed_batch_size, progress
        )
    tau_ids = tau_subset(spec.dataset, spec.val_split, spec.tau_images, spec.tau_seed)
    out = {}
    for layer in dict.fromkeys(ly for ly, _ in pending):
        val = spec.val_split
        ids, s_init, s_final = tau_scores(
            tables[("init", val)][layer], tables[("final", val)][layer], tau_ids
        )
        j = s_init.shape[1]
        inputs, states = {}, {}
        for sp in (sp for ly, sp in pending if ly == layer):
            sets = [set_array(topk[(st, layer, sp)], j, spec.k) for st in STATES]
            inputs[sp] = (*sets, *(emb_array(s, emb[sp]) for s in sets))
            states[sp] = unit_states([topk[(st, layer, sp)] for st in STATES], j, spec.k, spec.decoy_class)
        units = _units(spec, layer, j)
        for sp, table in _layer_tables(s_init, s_final, units, inputs, states).items():
            record = {
                "tau": {"requested": spec.tau_images, "used": len(ids), "seed": spec.tau_seed},
                "embedder": embedder.describe(),
                "tables": {st: tables[(st, sp)][layer] for st in STATES},
            }
            ls = (layer, sp)
            out[ls] = _commit(spec, ls, dirs[ls], keys[ls], table, accs, record)
            progress(len(out), len(pending), phase="metrics", layer=layer, split=sp)
    return out


def initial_embeddings(
    dataset: str, model: str, weights: str, variant_key: str, layers: tuple[str, ...], splits: tuple[str, ...],
    k: int, embedder: str | Mapping[str, Any], store_uri: str, device: str = "auto", batch_size: int = 64,
    progress: Progress = no_progress,
) -> int:  # fmt: skip
    """Embed θ0's top-k images of each layer on each split into the store's embedding cache
    (``jobs.embedding_cache``), once per variant before the trials: every trial's metrics stage
    embeds them again otherwise. Needs θ0's committed tables (phase 2); returns the images embedded
    or found."""
    from shared.embedders import get_embedder

    emb = get_embedder(_embedder_spec(embedder), device=device)
    total = 0
    for split in dict.fromkeys(splits):
        acts = ActivationsSpec(dataset=dataset, split=split, model=model, weights=weights,
                               variant_key=variant_key, layers=tuple(layers))  # fmt: skip
        tables = run_activations(acts, store_uri).tables  # committed by phase 2: read, not computed
        ids = {i for ly in layers for i in run_topk(tables[ly], k).table.column("image_id").to_pylist()}
        total += len(embed_cached(emb, dataset, split, sorted(ids), store_uri, batch_size, progress))
    return total


def _accuracy(spec: MetricsSpec, state: str, store_uri: str, progress: Progress) -> float:
    """Acc on V (%) of θ0 or θ, reused across attacks through the accuracy stage's key."""
    a = spec.activations(state, spec.val_split)
    return run_accuracy(
        spec.dataset, spec.val_split, spec.model, a.weights, store_uri, spec.variant_key, a.state_key,
        device=spec.device, batch_size=spec.batch_size, num_actors=spec.num_actors, progress=progress,
    ).acc  # fmt: skip


def _tagged(progress: Progress, **tags: object) -> Progress:
    """``progress`` with ``tags`` added, so a caller can tell which state and split a sub-job reports."""

    def report(done: int, total: int | None = None, **info: object) -> None:
        progress(done, total, **{**tags, **info})

    return report


def _embedder_spec(embedder: str | Mapping[str, Any]) -> str | dict[str, Any]:
    return dict(embedder) if isinstance(embedder, Mapping) else embedder


def _units(spec: MetricsSpec, layer: str, j: int) -> np.ndarray:
    if spec.units == "all":
        return np.arange(j)
    bad = [u for u in spec.units if u >= j]
    if bad:
        raise ValueError(
            f"MetricsSpec.units has {bad}, but layer {layer!r} of {spec.model} has {j} units (0..{j - 1})"
        )
    return np.asarray(spec.units, dtype=np.int64)


def _layer_tables(s_init, s_final, units, inputs, states) -> dict[str, pa.Table]:
    """One unit_metrics table per split; the Kendall columns (over D_τ) are computed once and shared.

    ``states[split]``: the split's dead_init, dead_final, decoy_top5 arrays (metrics_inputs.unit_states).
    """
    out: dict[str, pa.Table] = {}
    base = None
    for sp, (t_init, t_final, e_init, e_final) in inputs.items():
        if base is None:
            base = unit_metrics(
                scores_init=s_init, scores_final=s_final, topk_init=t_init, topk_final=t_final,
                emb_init=e_init, emb_final=e_final, units=units, **states[sp],
            )  # fmt: skip
            out[sp] = base
            continue
        c_ii, c_if = clip_matrix(e_init, e_init), clip_matrix(e_init, e_final)
        cols = {
            "clip_delta": clip_delta(c_ii, c_if)[units],
            "clip_w": clip_w(c_ii, c_if)[units],
            "topk_overlap": topk_overlap(t_init, t_final)[units],
        }
        cols = {n: pa.array(v, pa.float64()) for n, v in cols.items()}
        cols.update(unit_state_columns(len(t_init), units, **states[sp]))
        table = base
        for name, v in cols.items():
            table = table.set_column(table.schema.get_field_index(name), name, v)
        out[sp] = table
    return out


def _commit(spec, ls, out, key, table, accs, record) -> LayerSplitMetrics:
    """Parquet, then the manifest (last: nothing half-written looks done); the picture of the units
    chosen here is drawn from the commit (jobs.before_after.draw_committed)."""
    layer, split = ls
    integrity.prepare_recompute(out)  # a damaged or outdated commit's files go first
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    store.write_bytes(store.join(out, TABLE), buf.getvalue().to_pybytes())
    files = [TABLE]
    alive = alive_units(table)
    if isinstance(spec.picture_units, tuple):  # chosen by the user: shown as asked, dead or alive
        held = set(table.column("unit").to_pylist())
        shown = [u for u in spec.picture_units if u in held]
    else:  # a dead unit's top-k is arbitrary
        shown = pick_units(table.filter(pa.array(alive)), spec.picture_units)
    means = layer_means(table)
    acc0, acc1 = accs
    da = delta_acc(init=acc0, final=acc1)
    store.write_manifest(
        out,
        {
            "kind": "metrics", "key": key, "producer": CODE_VERSION, "files": files, "layer": layer,
            "split": split, "units": table.column("unit").to_pylist(), "means": means, "acc": acc1,
            "acc_init": acc0, "delta_acc": da, "picture_units": shown, "spec": asdict(spec),
            "dead": _dead_lists(table), **record,
        },
    )  # fmt: skip
    pic = store.join(out, PICTURE) if shown else None
    return LayerSplitMetrics(
        layer, split, out, store.join(out, TABLE), pic, shown, means, acc1, acc0, da, key, False
    )


def _dead_lists(table: pa.Table) -> dict[str, list[int]]:
    """The units behind the counts: dead at the start, and killed (alive before, dead after)."""
    units = table.column("unit").to_numpy()
    d0, d1 = (
        table.column(n).to_numpy(zero_copy_only=False).astype(bool) for n in ("dead_init", "dead_final")
    )
    return {"init": units[d0].tolist(), "killed": units[~d0 & d1].tolist()}


def _from_manifest(ls: tuple[str, str], out: str, m: dict) -> LayerSplitMetrics:
    pic = store.join(out, PICTURE) if m["picture_units"] else None
    return LayerSplitMetrics(
        *ls, out, store.join(out, TABLE), pic, m["picture_units"], m["means"], m["acc"], m["acc_init"],
        m["delta_acc"], m["key"], True,
    )  # fmt: skip


def read_unit_metrics(metrics_dir: str) -> pa.Table:
    """The committed per-unit table of one (layer, split) folder."""
    m = store.read_manifest(metrics_dir)
    if m is None:
        raise store.StoreError(f"metrics stage {metrics_dir} is not complete: no {store.MANIFEST} (run it)")
    return integrity.read_parquet(metrics_dir, m["files"][0], m)
