"""``vizsweep plan``: a sweep spec's stage graph, counts, GPU-hours and storage, without running anything.

Reads the spec with :func:`orchestrator.spec.load_spec` (file-only checks) and imports neither Ray
nor MLflow, so it answers in seconds on a laptop before a cluster exists. Counts follow the
planner (``orchestrator/plan.py``) and ARCHITECTURE.md's stage graph::

    dataset ─► base models ─► pruned variants ─► initial tables ─► attack trials ─► final tables ─► metrics

GPU-hours and storage come from :data:`COSTS` and the other ASSUMED constants below (see
``docs/costs.md`` for the figures, their formulas and what they leave out). They are planning
figures, not measurements: the output says so.

Split sizes: ``--train-images/--val-images`` when given; else a local dataset's manifest (or its
Parquet footers); else the ``synth`` block's sizes when the dataset is not generated yet; else
ImageNet-1k's (1,281,167 / 50,000), which is also what an ``s3://`` dataset gets: nothing remote
is read.

``--json`` prints one object with these keys:

- ``spec``, ``name``: the spec file and the sweep name.
- ``assumed``: always true — every time and size below is an estimate from assumed rates.
- ``assumptions``: ``gpu``, ``usd_per_gpu_hour``, ``cpus_per_gpu``, ``decode_images_per_s_per_cpu``,
  ``row_overhead_bytes`` and ``costs`` (model -> ``{"forward", "train"}`` images/s per GPU).
- ``dataset``: ``uri``, ``train_images``, ``val_images``, ``source`` (where the sizes came from),
  ``image_kind`` (``imagenet`` or ``small``: which decode rate applies).
- ``layers``: model -> layer alias -> units ``J_l`` of the unpruned model.
- ``trials``: ``total`` (== ``SweepSpec.trial_count()``), ``formula`` (``trial_formula()``) and
  ``per_attack`` (attack name -> trials).
- ``stages``: stage id -> ``{"count", "gpu_hours", "storage_bytes", "detail"}``, in graph order:
  ``datasets``, ``base_models``, ``reference_encoder``, ``pruned_variants``, ``initial_tables``,
  ``attack_trials``, ``final_tables``, ``metrics``.
- ``totals``: ``gpu_hours``, ``storage_bytes``, ``usd`` (GPU-hours × the assumed price).
- ``warnings``: problems the spec will meet that the file alone does not show (list of strings).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.spec import REFERENCE_EMBEDDER, SweepSpec, load_spec
from shared import store
from shared.attacks import family_of, starting_models, store_sources
from shared.pruners import get_pruner

# --- ASSUMED figures (docs/costs.md) ------------------------------------------------------

GPU = "NVIDIA A10G, AWS g5.xlarge (1 GPU, 4 vCPU, 16 GiB)"
USD_PER_GPU_HOUR = 1.006  # ASSUMED: g5.xlarge on-demand, us-west-2; spot is usually less
CPUS_PER_GPU = 4  # vCPUs beside each A10G on a g5.xlarge: they decode the images a GPU consumes


@dataclass(frozen=True)
class ModelCost:
    """ASSUMED images/s on one A10G at the model's own input size, fp32 (TF32 convolutions), batch 256."""

    forward: float  # inference: activation tables, accuracy, evaluation intervals
    train: float  # forward + backward + Adam step: attacks, fine-tuning, pretraining


COSTS: dict[str, ModelCost] = {
    "alexnet": ModelCost(forward=4000, train=1400),
    "resnet50": ModelCost(forward=900, train=290),
    "efficientnet_b0": ModelCost(forward=1300, train=380),
    "vit_b_32": ModelCost(forward=1000, train=330),
    "alexnet_mini": ModelCost(forward=40000, train=15000),  # 56 px crops
    "vgg19": ModelCost(forward=250, train=80),  # Heo et al.'s models (ASSUMED, as the others)
    "densenet121": ModelCost(forward=1000, train=300),
    "vgg_mini": ModelCost(forward=20000, train=7000),  # 56 px crops
}
UNKNOWN_MODEL = ModelCost(forward=900, train=290)  # a model not in the table: costed like resnet50
EMBED_RATE = {"open_clip": 1000.0, REFERENCE_EMBEDDER: 20000.0}  # ASSUMED embedder images/s (CLIP-δ, CLIP-W)
# ASSUMED decode + resize + crop throughput per vCPU: a full-size ImageNet JPEG (~110 KB, ~400x350)
# to 256/224 px, or a small (<= 128 px) synthetic image.
DECODE_PER_CPU = {"imagenet": 200.0, "small": 2500.0}
ROW_OVERHEAD = 40  # bytes per activation-table row beside the float32 vector: image_id, label, Parquet
METRICS_STAGE_BYTES = 1_000_000  # unit_metrics.parquet + before_after.png + manifest, ~1 MB (ASSUMED)
IMAGENET_SPLITS = {"train": 1_281_167, "val": 50_000}

# Settings of the jobs that the sweep spec does not expose (tests check them against the jobs).
# (Images an attack forwards per step beside the batch come from its family: extra_images_per_step.)
KEEP_CHECKPOINTS = 2  # AttackSpec.keep_checkpoints: step folders left in the store, model + Adam state each
CACHE_MB = 2048  # AttackSpec.cache_mb: a decoded train split this small is decoded once, not per epoch
PRETRAIN_EPOCHS = 16  # PretrainSpec.epochs ("weights: pretrain")
REFERENCE_EPOCHS = 6  # jobs.reference_encoder.REFERENCE_TRAINING["epochs"]
REFERENCE_MODEL = "resnet_mini"  # jobs.reference_encoder.REFERENCE_MODEL (costed like alexnet_mini)

# Units per layer alias, for when a model cannot be built on the meta device.
STATIC_UNITS: dict[str, dict[str, int]] = {
    "alexnet": {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256},
    "alexnet_mini": {"conv1": 48, "conv2": 96, "conv3": 128, "conv4": 128, "conv5": 64},
    "resnet50": {"layer4.2.conv2": 512},
    "efficientnet_b0": {"features.7": 320},
    "vit_b_32": {"encoder_layer_0": 768, "encoder_layer_6": 768, "encoder_layer_11": 768},
}
STATIC_PARAMS = {
    "alexnet": 61_100_840,
    "alexnet_mini": 513_008,
    "resnet50": 25_557_032,
    "efficientnet_b0": 5_288_548,
    "vit_b_32": 88_224_232,
}

STAGES = (
    "datasets",
    "base_models",
    "reference_encoder",
    "pruned_variants",
    "initial_tables",
    "attack_trials",
    "final_tables",
    "metrics",
)
LABELS = {
    "datasets": "dataset",
    "base_models": "base models",
    "reference_encoder": "reference encoder",
    "pruned_variants": "pruned variants",
    "initial_tables": "initial activation tables",
    "attack_trials": "attack trials",
    "final_tables": "final activation tables",
    "metrics": "metrics stages",
}


# --- the model zoo, on the meta device ----------------------------------------------------------


@functools.cache
def _meta_probe(model: str, layers: tuple[str, ...]) -> tuple[dict[str, int], int]:
    """Units per layer (from one forward of a meta tensor, with hooks) and parameter count."""
    import torch

    from shared.models.zoo import model_info

    info = model_info(model)
    with torch.device("meta"):
        net = info.builder(info.num_classes)
    modules = dict(net.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for layer in layers:
        path = info.resolve_layer(layer, net)
        handles.append(modules[path].register_forward_hook(functools.partial(_record, shapes, layer)))
    try:
        with torch.no_grad():
            crop = info.preprocess.crop
            net(torch.empty(1, 3, crop, crop, device="meta"))
    finally:
        for h in handles:
            h.remove()
    # shared.hooks.unit_scores: (N, C, *spatial) -> C units; (N, tokens, D) and (N, J) -> the last dim
    units = {layer: int(s[1] if len(s) >= 4 else s[-1]) for layer, s in shapes.items()}
    return units, int(sum(p.numel() for p in net.parameters()))


def _record(shapes: dict[str, tuple[int, ...]], layer: str, _module: Any, _inp: Any, out: Any) -> None:
    shapes[layer] = tuple(out.shape)


def layer_units(model: str, layers: tuple[str, ...]) -> dict[str, int]:
    """``J_l`` of each layer of the unpruned model: a meta-device build, else :data:`STATIC_UNITS`."""
    try:
        return _meta_probe(model, tuple(layers))[0]
    except Exception:  # an op without a meta kernel: fall back on the table
        table = STATIC_UNITS.get(model, {})
        return {layer: table.get(layer, 0) for layer in layers}


def param_count(model: str) -> int:
    try:
        return _meta_probe(model, ())[1]
    except Exception:
        return STATIC_PARAMS.get(model, 0)


def cost_of(model: str) -> ModelCost:
    return COSTS.get(model, UNKNOWN_MODEL)


def row_bytes(units: int) -> int:
    """One activation-table row: the float32 vector a_{l,·}(x) plus image_id, label and overhead."""
    return 4 * units + ROW_OVERHEAD


# --- split sizes -------------------------------------------------------------------------------


def dataset_sizes(
    spec: SweepSpec, train_images: int | None = None, val_images: int | None = None
) -> dict[str, Any]:
    """``{"uri", "train_images", "val_images", "source", "image_kind"}``; reads only local files."""
    ds = spec.dataset
    uri = ds.uri
    kind = "small" if ds.synth is not None and ds.synth.size <= 128 else "imagenet"
    out = {"uri": uri, "image_kind": kind}
    local = store.local_path(uri)
    sizes: tuple[int | None, int | None] = (None, None)
    source = ""
    if local is not None and os.path.isdir(local):
        from shared.dataset_meta import split_size

        sizes = (split_size(uri, ds.train_split), split_size(uri, ds.val_split))
        source = "the dataset's manifest" if store.read_manifest(uri) else "the dataset's Parquet footers"
        m = store.read_manifest(uri) or {}
        if isinstance(m.get("size"), int) and m["size"] <= 128:
            out["image_kind"] = "small"
    if None in sizes and ds.synth is not None:
        s = ds.synth
        sizes = (s.classes * s.train_per_class, s.classes * s.val_per_class)
        source = "the synth block; the dataset is not generated yet"
    if None in sizes:
        sizes = (IMAGENET_SPLITS["train"], IMAGENET_SPLITS["val"])
        where = "a remote dataset is not read" if local is None else "the dataset is not there"
        source = f"ImageNet-1k defaults; {where}"
    if train_images is not None or val_images is not None:
        sizes = (train_images or sizes[0], val_images or sizes[1])
        source = "--train-images/--val-images" + (
            f" (others from {source})" if None in (train_images, val_images) else ""
        )
    out.update(train_images=int(sizes[0]), val_images=int(sizes[1]), source=source)
    return out


# --- the estimate -----------------------------------------------------------------------------


def _variant_units(units: Mapping[str, int], p: Any) -> dict[str, int]:
    """Units per layer after pruning ``p`` (``Pruner.units_after``: norm keeps them, group removes
    ~rate of each layer's, vulnerability removes ``count`` from its layer)."""
    return get_pruner(p.method).units_after(units, p)


def _stage(count: int, seconds: float = 0.0, nbytes: float = 0.0, detail: str = "") -> dict[str, Any]:
    return {
        "count": int(count),
        "gpu_hours": seconds / 3600.0,
        "storage_bytes": int(nbytes),
        "detail": detail,
    }


def estimate(
    spec: SweepSpec, *, train_images: int | None = None, val_images: int | None = None
) -> dict[str, Any]:
    """The plan as a JSON-able dict (keys in the module docstring)."""
    data = dataset_sizes(spec, train_images, val_images)
    n_train, n_val = data["train_images"], data["val_images"]
    decode = DECODE_PER_CPU[data["image_kind"]] * CPUS_PER_GPU
    sizes = {spec.dataset.train_split: n_train, spec.dataset.val_split: n_val}
    t, m = spec.training, spec.metrics
    layers = tuple(spec.layers)
    models = [x.name for x in spec.models]
    units = {name: layer_units(name, layers) for name in dict.fromkeys(models)}
    warnings: list[str] = []

    def fwd(model: str, n: float) -> float:  # seconds of a streamed forward pass over n images
        return n / min(cost_of(model).forward, decode)

    def in_memory(model: str, epochs: int) -> float:
        """jobs.pretrain: decode both splits once, train from memory, then Acc on V."""
        return (
            (n_train + n_val) / decode
            + epochs * n_train / cost_of(model).train
            + n_val / cost_of(model).forward
        )

    def streamed(model: str, epochs: int) -> float:
        """jobs.prune: each epoch streams (and decodes) the train split, then Acc on V (streamed)."""
        return epochs * (n_train / decode + n_train / cost_of(model).train) + fwd(model, n_val)

    stages: dict[str, dict[str, Any]] = {}
    stages["datasets"] = _stage(
        1,
        detail=f"{spec.dataset.train_split} {n_train:,} / {spec.dataset.val_split} {n_val:,} images ({data['source']})",
    )

    # base models
    secs = nbytes = 0.0
    kinds = []
    for ms in spec.models:
        kinds.append(f"{ms.name} ({ms.weights_kind})")
        if ms.weights_kind == "pretrain":
            secs += in_memory(ms.name, _pretrain_epochs(ms.name))
            nbytes += 4 * param_count(ms.name)
    stages["base_models"] = _stage(len(spec.models), secs, nbytes, ", ".join(kinds))
    if m.embedder == REFERENCE_EMBEDDER:
        secs = in_memory("alexnet_mini", REFERENCE_EPOCHS)
        nbytes = 4 * param_count(REFERENCE_MODEL)
        stages["reference_encoder"] = _stage(
            1, secs, nbytes, f"{REFERENCE_MODEL}, the offline encoder of CLIP-δ/CLIP-W"
        )
    else:
        stages["reference_encoder"] = _stage(0, detail=f"not needed (embedder {m.embedder})")

    # trials: per attack, and the cost of one (model, variant, attack, layer scope)
    per_attack: dict[str, int] = {}
    for a in spec.attacks:
        applicable = sum(
            starting_models(a, spec.attacks, mm.name, layers)
            for mm in spec.models
            if family_of(a.name).applies(a, mm.name)
        )  # per model: the models its trials start from (the variant, or other trials' models)
        # models of the store (sweep:/key: references): once per seed, not per variant
        n = applicable * len(spec.pruning) + len(store_sources(a))
        n *= len(spec.seeds) * len(family_of(a.name).scopes(a, layers))
        per_attack[a.name] = per_attack.get(a.name, 0) + n
    per_epoch = math.ceil(n_train / t.batch_size)
    steps = t.max_steps or t.epochs * per_epoch
    evals = max(1, round(steps * t.evals_per_epoch / per_epoch)) + 1  # + the accuracy of θ0
    eval_n = min(t.eval_images, n_val)

    def attack_seconds(model: str, entry: Any) -> float:
        c = cost_of(model)
        fam = family_of(entry.name)
        extra = fam.extra_images_per_step(entry)
        gpu = t.batch_size / c.forward + fam.step_cost * (t.batch_size + extra) / c.train
        crop = _crop(model)
        cached = n_train * 3 * crop * crop * 4 <= CACHE_MB * 2**20  # float32 pixels, as TrainStream
        step = gpu if cached else max(gpu, t.batch_size / decode)
        return steps * step + (n_train / decode if cached else 0) + evals * eval_n / c.forward

    needed = tuple(dict.fromkeys((*m.splits, spec.dataset.val_split)))
    embed_rate = EMBED_RATE.get(m.embedder.partition(":")[0], EMBED_RATE["open_clip"])

    def trial_cost(model: str, entry: Any, scope: tuple[str, ...], u: Mapping[str, int]) -> dict[str, float]:
        fam = family_of(entry.name)
        if not fam.needs_tables:  # its own measurement (e.g. FSR maps), no tables, no embedder
            p = param_count(model) if fam.trains_model else 0  # input attacks: no training, no checkpoints
            train = attack_seconds(model, entry) if fam.trains_model else 0.0
            return {"attack": train, "final": fam.evaluation_images(entry) / cost_of(model).train,
                    "metrics": 0.0, "attack_bytes": 4 * p + KEEP_CHECKPOINTS * 12 * p, "final_bytes": 0.0,
                    "metrics_bytes": METRICS_STAGE_BYTES}  # fmt: skip
        final = sum(fwd(model, sizes[s]) for s in needed) + fwd(model, n_val)  # tables + final Acc on V
        embed = sum(min(sizes[s], 2 * m.k * sum(u[ly] for ly in scope)) for s in m.splits) / embed_rate
        p = param_count(model)
        return {
            "attack": attack_seconds(model, entry),
            "final": final,
            "metrics": embed + featureviz_seconds(m.featureviz, model, scope),
            "attack_bytes": 4 * p + KEEP_CHECKPOINTS * 12 * p,  # model.pt + step folders (model + Adam m, v)
            "final_bytes": sum(sizes[s] * row_bytes(u[ly]) for s in needed for ly in scope),
            "metrics_bytes": METRICS_STAGE_BYTES * len(scope) * len(m.splits),
        }

    # pruned variants, initial tables and the trials on each variant
    variants = prune_secs = prune_bytes = 0.0
    init_secs = init_bytes = 0.0
    acc = {
        "attack": 0.0,
        "final": 0.0,
        "metrics": 0.0,
        "attack_bytes": 0.0,
        "final_bytes": 0.0,
        "metrics_bytes": 0.0,
    }
    n_final = n_metrics = 0
    ranking_runs: set[tuple[str, str, str]] = set()  # (model, layer, attack) ranking units for pruning
    methods: dict[str, int] = {}
    for model in models:
        for p in spec.pruning:
            pruner = get_pruner(p.method)
            u = _variant_units(units[model], p)
            if pruner.prunes:
                variants += 1
                methods[p.method] = methods.get(p.method, 0) + 1
                prune_secs += streamed(model, p.epochs + pruner.extra_epochs(p))
                prune_bytes += 4 * param_count(model)
                if pruner.ranking_attack:
                    ranking_runs.add((model, p.layer, pruner.ranking_attack))
            if layers:  # tables of θ0 + Acc(θ0) on V (families without unit tables need none)
                init_secs += fwd(model, n_train + n_val) + fwd(model, n_val)
            init_bytes += sum((n_train + n_val) * row_bytes(u[ly]) for ly in layers)
            for a in (a for a in spec.attacks if family_of(a.name).applies(a, model)):
                runs = len(spec.seeds) * starting_models(a, spec.attacks, model, layers)
                for scope in family_of(a.name).scopes(a, layers):
                    cost = trial_cost(model, a, scope, u)
                    for k in acc:
                        acc[k] += cost[k] * runs
                    tables = family_of(a.name).needs_tables
                    n_final += runs * len(scope) * len(needed) * tables
                    n_metrics += runs * (len(scope) * len(m.splits) if tables else 1)

    for a in spec.attacks:  # trials on models of the store, costed as on the sweep's first model (ASSUMED)
        runs = len(spec.seeds) * len(store_sources(a))
        for scope in family_of(a.name).scopes(a, layers) if runs and models else ():
            cost = trial_cost(models[0], a, scope, units[models[0]])
            for k in acc:
                acc[k] += cost[k] * runs
            n_metrics += runs * (len(scope) * len(m.splits) if family_of(a.name).needs_tables else 1)

    # a pruner with a ranking attack (vulnerability: push-down) ranks units by the CLIP-δ of that
    # attack's run on the base model (phases.variants.ranked_units); the sweep's own unpruned trial serves
    shared_runs = extra_runs = 0
    unpruned = any(not get_pruner(p.method).prunes for p in spec.pruning)
    for model, layer, attack in sorted(ranking_runs):
        ranking = next((a for a in spec.attacks if a.name == attack), None)
        in_sweep = (
            unpruned
            and layer in layers
            and ranking is not None
            and (layer,) in family_of(ranking.name).scopes(ranking, layers)
        )
        if in_sweep:
            shared_runs += 1
            continue
        extra_runs += 1
        entry = ranking or family_of(attack).config(name=attack)
        cost = trial_cost(model, entry, (layer,), units[model])
        prune_secs += cost["attack"] + cost["final"] + cost["metrics"]
        prune_bytes += cost["attack_bytes"] + cost["final_bytes"] + cost["metrics_bytes"]
    detail = ", ".join(f"{n} {k}" for k, n in methods.items()) or "no pruning"
    if ranking_runs:
        attacks = ", ".join(sorted({a for _, _, a in ranking_runs}))
        ranked = ", ".join(m for m in methods if get_pruner(m).ranking_attack)
        detail += f"; {len(ranking_runs)} {attacks} ranking run(s) for {ranked} pruning"
        detail += " (= the unpruned push-down trial, shared)" if shared_runs and not extra_runs else ""
        detail += f" ({extra_runs} extra)" if extra_runs else ""
    stages["pruned_variants"] = _stage(int(variants), prune_secs, prune_bytes, detail)

    n_variants = len(models) * len(spec.pruning)
    stages["initial_tables"] = _stage(
        n_variants * len(layers) * 2,
        init_secs,
        init_bytes,
        f"{n_variants} variant(s) × {len(layers)} layer(s) × 2 splits ({spec.dataset.train_split}, "
        f"{spec.dataset.val_split}); one forward pass per variant and split covers all layers",
    )
    total = spec.trial_count()
    breakdown = ", ".join(f"{k} {v}" for k, v in per_attack.items())
    stages["attack_trials"] = _stage(
        total,
        acc["attack"],
        acc["attack_bytes"],
        f"{spec.trial_formula()} ({breakdown}); {steps:,} steps of {t.batch_size}, {evals} evaluations each"
        + (f"; {_hours(acc['attack'] / total / 3600)} GPU-h per trial" if total else ""),
    )
    stages["final_tables"] = _stage(
        n_final,
        acc["final"],
        acc["final_bytes"],
        f"per trial: its layer(s) × splits {', '.join(needed)}; + Acc on V",
    )
    stages["metrics"] = _stage(
        n_metrics,
        acc["metrics"],
        acc["metrics_bytes"],
        f"per trial: its layer(s) × reported splits {', '.join(m.splits)}; embedder {m.embedder}"
        + _featureviz_detail(m.featureviz),
    )

    warnings += _warnings(spec, data, models)
    gpu_hours = sum(s["gpu_hours"] for s in stages.values())
    storage = sum(s["storage_bytes"] for s in stages.values())
    return {
        "spec": None,
        "name": spec.name,
        "assumed": True,
        "assumptions": {
            "gpu": GPU,
            "usd_per_gpu_hour": USD_PER_GPU_HOUR,
            "cpus_per_gpu": CPUS_PER_GPU,
            "decode_images_per_s_per_cpu": DECODE_PER_CPU,
            "row_overhead_bytes": ROW_OVERHEAD,
            "costs": {k: asdict(v) for k, v in COSTS.items()},
        },
        "dataset": data,
        "layers": units,
        "trials": {"total": total, "formula": spec.trial_formula(), "per_attack": per_attack},
        "stages": {k: stages[k] for k in STAGES},
        "totals": {"gpu_hours": gpu_hours, "storage_bytes": storage, "usd": gpu_hours * USD_PER_GPU_HOUR},
        "warnings": warnings,
    }


def featureviz_units(fv: Any) -> int:
    """Units rendered per layer: the count, or the units named."""
    return fv.units if isinstance(fv.units, int) else len(fv.units)


def featureviz_seconds(fv: Any, model: str, scope: tuple[str, ...]) -> float:
    """The §5 renders of one trial: steps x units x layers x 2 models (θ0, θ), each a forward + backward
    of one image, costed like training images (θ0's renders are reused across a variant's attacks: an
    upper bound). 0 when the stage is off."""
    if fv is None:
        return 0.0
    return 2 * fv.steps * featureviz_units(fv) * len(scope) / cost_of(model).train


def _featureviz_detail(fv: Any) -> str:
    if fv is None:
        return ""
    return f"; + synthetic images of {featureviz_units(fv)} unit(s) per layer, {fv.steps} steps, on θ0 and θ"


def _pretrain_epochs(model: str) -> int:
    from shared.models.zoo import model_info

    return model_info(model).pretrain_epochs


def _crop(model: str) -> int:
    from shared.models.zoo import model_info

    return model_info(model).preprocess.crop


def _warnings(spec: SweepSpec, data: Mapping[str, Any], models: list[str]) -> list[str]:

    out = []
    ranked = sorted({p.method for p in spec.pruning if get_pruner(p.method).ranking_attack})
    if ranked:
        attacks = ", ".join(sorted({get_pruner(m).ranking_attack for m in ranked}))
        out.append(
            f"{', '.join(ranked)} pruning's {attacks} ranking run (one per model and layer) runs in the sweep "
            "driver (orchestrator.phases.variants.ranked_units), not in a GPU trial: on docs/cluster.md's cluster "
            "the driver is the CPU-only head node"
        )
    if spec.resources.gpus_per_trial == "auto" and store.local_path(spec.store) is None:
        out.append(
            "gpus_per_trial: auto means 0 on a cluster that starts without GPU workers (docs/cluster.md §5); "
            "set gpus_per_trial: 1"
        )
    if data["source"].startswith("ImageNet-1k defaults"):
        out.append(f"split sizes assumed: {data['source']}; pass --train-images/--val-images to change them")
    return out


# --- output ------------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""  # unreachable


def _hours(h: float) -> str:
    if not h:
        return "-"
    return f"{h:,.2f}" if h >= 0.01 else "<0.01"


def format_plan(est: Mapping[str, Any]) -> str:
    """The readable table ``vizsweep plan`` prints."""
    d, tr, tot = est["dataset"], est["trials"], est["totals"]
    lines = [
        f"sweep {est['name']}" + (f"  ({est['spec']})" if est.get("spec") else ""),
        "  dataset ─► base models ─► pruned variants ─► initial tables ─► attack trials ─► final tables ─► metrics",
        "",
        f"{'stage':<26} {'count':>6} {'GPU-h':>8} {'storage':>10}  detail",
    ]
    for key, s in est["stages"].items():
        gpu = _hours(s["gpu_hours"])
        size = _size(s["storage_bytes"]) if s["storage_bytes"] else "-"
        lines.append(f"{LABELS[key]:<26} {s['count']:>6} {gpu:>8} {size:>10}  {s['detail']}")
    lines += [
        f"{'total':<26} {'':>6} {_hours(tot['gpu_hours']):>8} {_size(tot['storage_bytes']):>10}",
        "",
        f"trials: {tr['total']} ({tr['formula']})",
        "units per layer: "
        + "; ".join(
            f"{mod} " + ", ".join(f"{ly} {n}" for ly, n in u.items()) for mod, u in est["layers"].items()
        ),
        (
            f"GPU-hours: {_hours(tot['gpu_hours'])} (ASSUMED rates on {est['assumptions']['gpu']}; "
            f"≈ ${tot['usd']:,.0f} at an ASSUMED ${est['assumptions']['usd_per_gpu_hour']}/GPU-hour)"
        ),
        f"storage: {_size(tot['storage_bytes'])} (uncompressed activation tables + checkpoints; ASSUMED)",
        f"split sizes: {d['source']}. ASSUMED figures and formulas: docs/costs.md",
    ]
    lines += [f"warning: {w}" for w in est["warnings"]]
    return "\n".join(lines)


def cmd_plan(
    spec_path: str, *, as_json: bool = False, train_images: int | None = None, val_images: int | None = None
) -> int:
    """``vizsweep plan``: a bad spec raises SpecError (a ValueError), which the CLI turns into exit 2."""
    for name, v in (("--train-images", train_images), ("--val-images", val_images)):
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    spec = load_spec(spec_path)
    est = estimate(spec, train_images=train_images, val_images=val_images)
    est["spec"] = spec_path
    print(json.dumps(est, indent=2) if as_json else format_plan(est))
    return 0
