"""``vizsweep audit`` (SCIENCE.md §8): was this model's interpretation manipulated?

A suspect model and a trusted reference of the same architecture are compared on the same
validation images with the metrics stage (``jobs.metrics``, reference = θ0, suspect = θ): per
unit top-k overlap, Kendall-τ and CLIP-δ; per interpreter the §6 test losses between their
heatmaps. How far a unit may move is learned from fine-tuning baselines: the per-unit tables
of a sweep's ``finetune`` trials (``AuditSpec.baseline_tables``, the orchestrator finds them),
or pairs (start, fine-tuned) measured here (``baseline_pairs``), or, with neither, the
reference fine-tuned briefly with the ``finetune`` attack (``baseline_steps`` steps). The
decision rule is :mod:`jobs.audit_flags` (its docstring states it in full; the summary repeats
it). Output, committed under ``{store}/audits/{key}/``: ``units.parquet`` (layer, unit, metrics,
flagged, reason), ``maps.parquet`` (with interpreters), ``summary.json`` and, per layer,
``{layer}_most_changed.png`` (the metrics stage's before/after picture of the units with the
largest CLIP-δ), then ``_MANIFEST.json``. A rerun with the same key is read back. On Ray: the
metrics stage's forward passes (Ray Data), and the map comparison, one Ray task (a free GPU, else
CPUs; ``summary.json`` records where it ran as ``maps_ran_on``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import audit_flags as rule
from jobs.audit_inputs import AuditInputError, check_inputs
from jobs.metrics import MetricsSpec, read_unit_metrics, run_metrics
from shared import store

__all__ = ["AuditInputError", "AuditResult", "AuditSpec", "check_inputs", "run_audit", "weights_key"]
CODE_VERSION = "audit-v1"
EXECUTION_ONLY = ("device", "batch_size", "num_actors")
TABLE, MAPS, SUMMARY = "units.parquet", "maps.parquet", "summary.json"


@dataclass(frozen=True)
class AuditSpec:
    """What determines an audit (all but EXECUTION_ONLY is keyed)."""

    dataset: str  # dataset root URI; its ``split`` holds the images both models are compared on
    model: str  # registered model name of both
    suspect: str  # checkpoint URI of the model under audit
    reference: str  # checkpoint URI of the trusted model (θ0 of §3)
    layers: tuple[str, ...] = ("conv5",)
    interpreters: tuple[str, ...] = ()  # §6 interpreters whose maps are compared (none: units only)
    split: str = "val"
    train_split: str = "train"  # the split a brief fine-tuning baseline trains on
    k: int = 10
    tau_images: int = 10_000
    seed: int = 0
    embedder: str = "open_clip:ViT-B-32:openai"
    map_images: int = 64  # validation images whose maps are compared (seeded subset)
    picture_units: int = 4  # units in each layer's picture (the largest CLIP-δ)
    # layer -> metrics folders (``unit_metrics.parquet``) of fine-tuning baselines, e.g. a sweep's
    baseline_tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # (start, fine-tuned) checkpoint pairs measured here (units when no tables; maps always)
    baseline_pairs: tuple[tuple[str, str], ...] = ()
    baseline_steps: int = 20  # steps of the brief fine-tuning when no baseline is given
    device: str = field(default="auto", compare=False)
    batch_size: int = field(default=256, compare=False)
    num_actors: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "interpreters", tuple(self.interpreters))
        object.__setattr__(
            self, "baseline_tables", {k: tuple(v) for k, v in dict(self.baseline_tables).items()}
        )
        object.__setattr__(self, "baseline_pairs", tuple(tuple(p) for p in self.baseline_pairs))


@dataclass
class AuditResult:
    uri: str  # the audit's folder
    verdict: str  # "manipulated" or "no evidence of manipulation"
    summary: dict[str, Any]  # summary.json
    table_uri: str
    maps_uri: str | None
    pictures: list[str]  # one per layer
    skipped: bool
    seconds: float


def weights_key(uri: str) -> str:
    """Content key of a checkpoint file (its bytes), so a renamed copy is the same model; a local
    file is hashed once per (path, size, mtime) in a process."""
    local = store.local_path(uri)
    if local is not None and os.path.isfile(local):
        st = os.stat(local)
        return _hashed(uri, st.st_size, st.st_mtime_ns)
    return "w" + hashlib.sha256(store.read_bytes(uri)).hexdigest()[:15]


@functools.lru_cache(maxsize=64)
def _hashed(uri: str, size: int, mtime_ns: int) -> str:
    return "w" + hashlib.sha256(store.read_bytes(uri)).hexdigest()[:15]


def baseline_attack() -> str:
    """The fine-tuning control of §2 (α fixed at 0: the maintain loss alone), as the family records
    declare it: the baseline whose spread the audit calibrates on."""
    from shared.attacks import families, get_attack

    for fam in families():
        for name in fam.attacks:
            if fam.runner == "finetuning" and get_attack(name).fixed_alpha == 0.0:
                return name
    raise LookupError("no registered fine-tuning family declares a control attack (fixed_alpha = 0)")


def audit_dir(store_uri: str, key: str) -> str:
    return store.join(store_uri, "audits", key)


def _metrics_spec(spec: AuditSpec, init: str, final: str, label: str) -> MetricsSpec:
    return MetricsSpec(
        dataset=spec.dataset, model=spec.model, variant_key=weights_key(init), init_weights=init,
        final_weights=final, final_state_key=weights_key(final), layers=spec.layers, k=spec.k,
        tau_images=spec.tau_images, tau_seed=spec.seed, val_split=spec.split, splits=(spec.split,),
        embedder=spec.embedder, picture_units=spec.picture_units, label=label, device=spec.device,
        batch_size=spec.batch_size, num_actors=spec.num_actors,
    )  # fmt: skip


def _key(spec: AuditSpec) -> str:
    ident = {k: v for k, v in asdict(spec).items() if k not in EXECUTION_ONLY}
    files = {n: weights_key(getattr(spec, n)) for n in ("suspect", "reference")}
    pairs = [[weights_key(a), weights_key(b)] for a, b in spec.baseline_pairs]
    return store.content_key(ident, files, pairs, CODE_VERSION)


def run_audit(spec: AuditSpec, store_uri: str) -> AuditResult:
    """Audit (or read back) one suspect model; see the module docstring."""
    t0 = time.time()
    check_inputs(spec.suspect, spec.reference, spec.model, spec.layers, spec.interpreters)
    key = _key(spec)
    out = audit_dir(store_uri, key)
    done = store.read_manifest(out)
    if done is not None and done.get("key") == key:
        return _result(out, done, True, time.time() - t0)
    pairs = spec.baseline_pairs
    if not pairs and not spec.baseline_tables:
        pairs = ((spec.reference, _brief_finetune(spec, store_uri)),)
    base = {ly: [read_unit_metrics(d) for d in spec.baseline_tables.get(ly, ())] for ly in spec.layers}
    for init, final in pairs if any(not v for v in base.values()) else ():
        res = run_metrics(_metrics_spec(spec, init, final, "fine-tuning baseline"), store_uri)
        for ly in spec.layers:
            if not spec.baseline_tables.get(ly):
                base[ly].append(read_unit_metrics(res.per[(ly, spec.split)].uri))
    sus = run_metrics(
        _metrics_spec(spec, spec.reference, spec.suspect, "audit: suspect vs reference"), store_uri
    )
    table, parts = _unit_table(spec, sus, base)
    maps = _maps_on_ray(spec, pairs) if spec.interpreters else None
    if maps is not None:
        parts += maps[1]
    summary = {
        "verdict": rule.verdict(parts), "rule": rule.RULE, "parts": parts, "model": spec.model,
        "suspect": spec.suspect, "reference": spec.reference, "dataset": spec.dataset, "split": spec.split,
        "baseline": {"tables": {k: list(v) for k, v in spec.baseline_tables.items()},
                     "pairs": [list(p) for p in pairs]},
        "most_changed": _most_changed(table, spec.picture_units),
        **({"maps_ran_on": maps[2]} if maps is not None else {}),
    }  # fmt: skip
    files = _write(out, table, maps[0] if maps else None, summary)
    for ly in spec.layers:
        pic = sus.per[(ly, spec.split)].picture_uri
        if pic is not None:
            store.write_bytes(store.join(out, f"{ly}_most_changed.png"), store.read_bytes(pic))
            files.append(f"{ly}_most_changed.png")
    manifest = {"kind": "audit", "key": key, "producer": CODE_VERSION, "files": files, "summary": summary,
                "spec": store.json_plain(asdict(spec))}  # fmt: skip
    store.write_manifest(out, manifest)
    return _result(out, manifest, False, time.time() - t0)


def _brief_finetune(spec: AuditSpec, store_uri: str) -> str:
    """The reference fine-tuned for ``baseline_steps`` steps (the ``finetune`` control of §2)."""
    from jobs.attack import run_attack
    from jobs.attack_spec import AttackSpec

    a = AttackSpec(
        dataset=spec.dataset, model=spec.model, weights=spec.reference, variant_key=weights_key(spec.reference),
        attack=baseline_attack(), config={"k": spec.k, "scale": "unit"}, layers=spec.layers,
        max_steps=spec.baseline_steps, eval_split=spec.split, train_split=spec.train_split, seed=spec.seed,
        device=spec.device,
    )  # fmt: skip
    res = run_attack(a, store_uri)
    if res.model_uri is None:
        raise RuntimeError(f"the brief fine-tuning baseline of {spec.reference} stopped without a model")
    return res.model_uri


def _unit_table(spec: AuditSpec, sus, base: dict[str, list[pa.Table]]) -> tuple[pa.Table, list[dict]]:
    """The per-unit table of every layer, and each layer's verdict inputs."""
    cols: dict[str, list] = {n: [] for n in ("layer", "unit", "clip_delta", "kendall_tau", "topk_overlap",
                                             "dead_reference", "dead_suspect", "flagged", "reason")}  # fmt: skip
    parts = []
    for ly in spec.layers:
        t = read_unit_metrics(sus.per[(ly, spec.split)].uri)
        thr = rule.unit_thresholds(base[ly])
        judged, flagged, reasons = rule.unit_flags(t, thr)
        own = [rule.unit_flags(b, thr) for b in base[ly]]
        b_flag = sum(int(f[1].sum()) for f in own)
        b_n = sum(int(f[0].sum()) for f in own)
        parts.append({"part": f"layer {ly}", "kind": "units", "thresholds": thr,
                      **rule.judge(int(flagged.sum()), int(judged.sum()), b_flag / b_n if b_n else 0.0)})  # fmt: skip
        n = t.num_rows
        cols["layer"] += [ly] * n
        cols["unit"] += t.column("unit").to_pylist()
        for c in ("clip_delta", "kendall_tau", "topk_overlap"):
            cols[c] += t.column(c).to_pylist()
        cols["dead_reference"] += t.column("dead_init").to_pylist()
        cols["dead_suspect"] += t.column("dead_final").to_pylist()
        cols["flagged"] += flagged.tolist()
        cols["reason"] += reasons
    return pa.table(cols), parts


def _maps_on_ray(spec: AuditSpec, pairs) -> tuple[pa.Table, list[dict], dict[str, Any]]:
    """:func:`_maps` as one Ray task, like the other jobs' forward passes: on a GPU when the cluster has
    a free one (and ``spec.device`` allows it), else on the CPUs free now; plus where it ran."""
    import ray

    from jobs.raysetup import ensure_ray, free_gpus, task_cpus

    ensure_ray()
    gpu = spec.device != "cpu" and free_gpus() >= 1
    cpus = 1 if gpu else task_cpus()
    task = ray.remote(_maps_task).options(num_cpus=cpus, num_gpus=1 if gpu else 0, max_retries=0)
    return ray.get(task.remote(spec, pairs, store.current_s3(), cpus))  # an error in the task surfaces here


def _maps_task(spec: AuditSpec, pairs, s3: Any, threads: int) -> tuple[pa.Table, list[dict], dict[str, Any]]:
    import torch

    from jobs.raysetup import where

    store.configure(s3)  # the driver's S3 endpoint and credentials (never from the URI)
    torch.set_num_threads(max(1, threads))
    return (*_maps(spec, pairs), where())


def _maps(spec: AuditSpec, pairs) -> tuple[pa.Table, list[dict]]:
    """Per interpreter and image the §6 test losses (top-k, centre-mass) suspect vs reference,
    judged against the same losses of each baseline pair."""
    from jobs.audit_inputs import map_losses

    rows: dict[str, list] = {"interpreter": [], "image_id": [], "topk": [], "center_mass": [], "flagged": []}
    parts = []
    if not pairs:
        raise ValueError("comparing maps needs baseline models: pass baseline_pairs (or no baseline at all)")
    for interp in spec.interpreters:
        ids, tk, cm = map_losses(spec, interp, spec.reference, spec.suspect)
        base = [map_losses(spec, interp, a, b)[1:] for a, b in pairs]
        btk, bcm = np.concatenate([b[0] for b in base]), np.concatenate([b[1] for b in base])
        thr = rule.map_thresholds(btk, bcm)
        flags = rule.map_flags(tk, cm, thr)
        b_flags = rule.map_flags(btk, bcm, thr)
        parts.append({"part": f"interpreter {interp}", "kind": "maps", "thresholds": thr,
                      **rule.judge(int(flags.sum()), len(flags), float(b_flags.mean()))})  # fmt: skip
        rows["interpreter"] += [interp] * len(ids)
        rows["image_id"] += ids
        rows["topk"] += tk.tolist()
        rows["center_mass"] += cm.tolist()
        rows["flagged"] += flags.tolist()
    return pa.table(rows), parts


def _most_changed(table: pa.Table, n: int) -> list[dict[str, Any]]:
    d = table.to_pylist()
    alive = [r for r in d if not r["dead_reference"] and r["clip_delta"] == r["clip_delta"]]
    return sorted(alive, key=lambda r: -r["clip_delta"])[: max(n, 1)]


def _parquet(t: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def _write(out: str, table: pa.Table, maps: pa.Table | None, summary: dict) -> list[str]:
    from shared import integrity

    integrity.prepare_recompute(out)
    store.write_bytes(store.join(out, TABLE), _parquet(table))
    files = [TABLE]
    if maps is not None:
        store.write_bytes(store.join(out, MAPS), _parquet(maps))
        files.append(MAPS)
    store.write_json(store.join(out, SUMMARY), summary)
    return [*files, SUMMARY]


def _result(out: str, m: dict, skipped: bool, seconds: float) -> AuditResult:
    files = m["files"]
    return AuditResult(
        out, m["summary"]["verdict"], m["summary"], store.join(out, TABLE),
        store.join(out, MAPS) if MAPS in files else None,
        [store.join(out, f) for f in files if f.endswith(".png")], skipped, seconds,
    )  # fmt: skip
