"""The sweep's feature-visualisation stage (SCIENCE.md §5, thesis Fig. 3.7), after the metrics stage.

Opt-in (``metrics.featureviz`` in the spec; the trial's ``evaluation["featureviz"]``). Per trial
layer: the chosen units (a count: the attacked units alive in both states with the highest CLIP-δ
on the attacked split, as the metrics picture picks them; or a list) are rendered on θ0 (content key
= the variant's key, one commit per unit, so every attack of the variant reuses them) and on θ
(key = the attack key); the two images of a unit are compared (activation on both models, embedding
cosine). Committed under ``{store}/featureviz_stage/{key}/``: ``_MANIFEST.json`` (per-layer means and
per-unit rows) and one picture per (layer, split), ``{layer}_{split}.png`` and ``.pdf``: per unit a
"before" row (its natural top-5 under θ0, then its synthetic image on θ0) and an "after" row (top-5
under θ, then the synthetic image on θ), captioned with the activation each synthetic image reached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from jobs.before_after import (
    HIGHEST_CLIP_DELTA,
    before_after_rows,
    dataset_classes,
    pick_units,
    selection_note,
    write_picture,
)
from jobs.featureviz import FeatureVizSpec, comparison_rows, load_model, run_featureviz_units
from jobs.metrics import MetricsResult, read_unit_metrics
from shared import store, timing
from shared.featureviz import compare_renderings

CODE_VERSION = "featureviz-stage-v2"  # v2: one picture per (layer, split), natural + synthetic
DEFAULTS = {"units": 4, "steps": 512, "seed": 0, "batch_units": 64}  # SCIENCE.md §5: 512 steps
KEYED = ("units", "steps", "seed")  # batch_units: an execution setting
SYNTHETIC_NOTE = (
    "Last column: the unit's synthetic (activation-maximizing) image on the row's model and the activation "
    "it reached there; cos: the embedding cosine of the two synthetic images."
)


@dataclass
class StageResult:
    final: dict[str, float]  # MLflow final metrics
    artifacts: list[tuple[str, str]]  # (store URI, artifact name)
    rendered: int  # images rendered now (0: every render reused)


def settings(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """The stage's settings with defaults filled in, or None when the stage is off."""
    fv = evaluation.get("featureviz")
    return None if fv is None else {**DEFAULTS, **{k: v for k, v in fv.items() if v is not None}}


def keyed(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """What of the settings enters the trial key (None when off: keys of sweeps without it unchanged)."""
    s = settings(evaluation)
    return None if s is None else {k: list(s[k]) if isinstance(s[k], list | tuple) else s[k] for k in KEYED}


def stage_uri(store_uri: str, key: str) -> str:
    return store.join(store_uri, "featureviz_stage", key)


def stage_key(job: Any, attack_key: str, metric_keys: list[str]) -> str:
    """The stage's key: the attack, the metrics stage it picks units from, the settings, the embedder."""
    return store.content_key(
        attack_key, sorted(metric_keys), keyed(job.evaluation), job.evaluation["embedder"], CODE_VERSION
    )


def committed_stage(job: Any, store_uri: str, attack_key: str, mres: MetricsResult) -> StageResult | None:
    key = stage_key(job, attack_key, [m.key for m in mres.per.values()])
    m = store.read_manifest(stage_uri(store_uri, key))
    if m is None or m.get("key") != key:
        return None
    out = stage_uri(store_uri, key)
    return StageResult(m["final"], [(store.join(out, f), f) for f in m["files"]], 0)


def run_stage(job: Any, store_uri: str, attack_key: str, model_uri: str, mres: MetricsResult) -> StageResult:
    """Render, compare and commit (or reuse a committed stage); its time is the trial's ``featureviz`` part."""
    done = committed_stage(job, store_uri, attack_key, mres)
    if done is not None:
        return done
    from shared.embedders import get_embedder

    with timing.part("featureviz"):
        t0 = time.time()
        s = settings(job.evaluation)
        key = stage_key(job, attack_key, [m.key for m in mres.per.values()])
        out = stage_uri(store_uri, key)
        embedder = get_embedder(job.evaluation["embedder"], device="auto")
        final: dict[str, float] = {}
        files: list[str] = []
        rows: dict[str, list[dict[str, Any]]] = {}
        rendered = 0
        models: dict[str, Any] = {}
        for i, layer in enumerate(job.layers):
            split, table, units = _units(job, layer, mres, s["units"])
            if not units:
                continue
            specs = {
                state: FeatureVizSpec(job.model, weights, layer, tuple(units), model_key=mkey, steps=int(s["steps"]),
                                      seed=int(s["seed"]), batch_units=int(s["batch_units"]))  # fmt: skip
                for state, weights, mkey in (("init", job.weights, job.variant_key), ("final", model_uri, attack_key))
            }  # fmt: skip
            renders = {}
            for state, spec in specs.items():
                models.setdefault(state, load_model(spec))
                renders[state], n = run_featureviz_units(spec, store_uri, models[state])
                rendered += n
            cmp = compare_renderings(job.model, layer, units, (models["init"], renders["init"].images),
                                     (models["final"], renders["final"].images), embedder)  # fmt: skip
            means = {"fv_similarity": float(np.nanmean(cmp.cosine)), "fv_act_init": float(np.mean(cmp.act_before)),
                     "fv_act_final": float(np.mean(cmp.act_after))}  # fmt: skip
            final |= {f"{layer}.{n}": v for n, v in means.items()}
            if i == 0:
                final |= means
            rows[layer] = cmp.rows()
            files += _picture(job, out, layer, split, table, (renders["init"], renders["final"], cmp), mres,
                              None if isinstance(s["units"], list | tuple) else HIGHEST_CLIP_DELTA)  # fmt: skip
        store.write_manifest(out, {"kind": "featureviz_stage", "key": key, "final": final, "files": files,
                                   "rows": rows, "settings": s, "embedder": embedder.describe(),
                                   "seconds": time.time() - t0})  # fmt: skip
    return StageResult(final, [(store.join(out, f), f) for f in files], rendered)


def _units(
    job: Any, layer: str, mres: MetricsResult, chosen: int | list[int]
) -> tuple[str, pa.Table, list[int]]:
    """(split, its unit table, the units): a count picks by CLIP-δ on the attacked split (else the first)."""
    split = (
        job.train_split
        if (layer, job.train_split) in mres.per
        else next(sp for ly, sp in mres.per if ly == layer)
    )
    table = read_unit_metrics(mres.per[(layer, split)].uri)
    if not isinstance(chosen, int):
        return split, table, [int(u) for u in chosen]
    from shared.metrics import alive_units

    return split, table, pick_units(table.filter(pa.array(alive_units(table))), chosen)


def _picture(job, out, layer, split, table, synthetic, mres, rule) -> list[str]:
    """The (layer, split) picture: per unit its natural top-5 (the metrics stage's committed top-k
    tables) and then its synthetic image, a row on θ0 and a row on θ; PNG and PDF."""
    from jobs.topk import read_topk, topk_uri
    from shared.grid import grid_figure

    before, after, cmp = synthetic
    k = int(job.evaluation["k"])
    n = min(5, k)
    held = set(table.column("unit").to_pylist())
    shown = [u for u in cmp.units if u in held]  # units outside the table: no natural images
    natural = {}
    if shown:
        topks = [read_topk(topk_uri(mres.activations[(st, split)][layer], k)) for st in ("init", "final")]
        nat = before_after_rows(job.dataset, split, *topks, table, shown, dataset_classes(job.dataset), n)
        natural = {u: (nat[2 * i], nat[2 * i + 1]) for i, u in enumerate(shown)}
    title = (f"{job.attack} on {job.model}, layer {layer} ({split}): top-{n} natural images, then the "
             f"synthetic image, before (θ0) / after (θ) the attack")  # fmt: skip
    note = f"{selection_note(cmp.units, rule and rule.format(n=len(cmp.units)), None, '')} {SYNTHETIC_NOTE}"
    fig = grid_figure(comparison_rows(before, after, cmp, natural, n), title=title, columns=n + 1, note=note)
    name = f"{layer}_{split}.png"
    write_picture(fig, store.join(out, name))
    return [name, name[: -len(".png")] + ".pdf"]
