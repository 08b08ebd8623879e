"""``vizsweep audit``: check the input, find a sweep's fine-tuning baselines, run the audit job,
print the verdict and log an MLflow run in the experiment "audit".

Every check that can fail on bad input (checkpoints, architectures, layers, interpreters, the
sweep and its baselines) runs before Ray or any forward pass starts; errors name the argument.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from jobs.audit import AuditResult, AuditSpec, baseline_attack, check_inputs, run_audit
from jobs.audit_inputs import AuditInputError
from shared import store

EXPERIMENT = "audit"
DEFAULT_EMBEDDER = "open_clip:ViT-B-32:openai"


def sweep_baseline(store_uri: str, sweep_id: str, layers: Sequence[str], split: str) -> dict[str, Any]:
    """The ``finetune`` trials of a finished sweep: their per-unit tables by layer, their (start,
    fine-tuned) model pairs, and the sweep's evaluation settings (embedder, k, |D_τ|)."""
    from orchestrator.commands import SweepNotFound, find_sweep
    from orchestrator.plan import TrialPlan, stored_result

    try:
        d = find_sweep(store_uri, sweep_id)
    except SweepNotFound as e:
        raise AuditInputError(f"--sweep: {e}") from None
    plans = [TrialPlan.from_dict(p) for p in store.read_json(store.join(d, "plan.json"))]
    control = baseline_attack()
    tables: dict[str, list[str]] = {ly: [] for ly in layers}
    pairs, measured, evaluation = [], set(), {}
    for p in plans:
        if p.job["attack"] != control:
            continue
        found = trial_tables(p, store_uri, stored_result)
        if found is None:
            continue
        model_uri, unit_tables = found
        evaluation = p.job.get("evaluation", {})
        pairs.append((p.job["weights"], model_uri))
        for name, mdir in unit_tables.items():
            layer, sp = name.split("/", 1)
            measured.add(layer)
            if sp == split and layer in tables:
                tables[layer].append(mdir)
    missing = [ly for ly, v in tables.items() if not v]
    if missing:
        raise AuditInputError(
            f"--sweep {sweep_id!r} has no finished {control!r} trial measuring layer(s) {', '.join(missing)} on "
            f"split {split!r} (its {control} trials measure: {', '.join(sorted(measured)) or 'none'}); audit "
            f"those layers, or leave out --sweep to calibrate on the reference fine-tuned briefly"
        )
    return {
        "tables": {k: tuple(v) for k, v in tables.items()},
        "pairs": tuple(pairs),
        "evaluation": evaluation,
    }


def trial_tables(plan: Any, store_uri: str, stored_result: Any) -> tuple[str, dict[str, str]] | None:
    """(model URI, "layer/split" -> metrics folder) of a finished trial. A trial whose keys this
    version computes differently (a store from an older vizsweep) is read from its folders: the
    model under ``models/{attack key}`` and each layer's committed metrics folder."""
    from jobs.attack import model_dir
    from jobs.metrics import metrics_uri

    out = stored_result(plan, store_uri)
    if out is not None and out.model_uri:
        return out.model_uri, dict(out.unit_tables)
    mdir = model_dir(store_uri, plan.attack_key)
    if store.read_manifest(mdir) is None:
        return None
    job, tables = plan.job, {}
    for layer in job["layers"]:
        for sp in job.get("evaluation", {}).get("splits", [job["val_split"]]):
            d = metrics_uri(store_uri, job["variant_key"], plan.attack_key, layer, sp)
            if store.read_manifest(d) is not None:
                tables[f"{layer}/{sp}"] = d
    return (store.join(mdir, "model.pt"), tables) if tables else None


def cmd_audit(args: Any) -> int:
    from orchestrator.commands import resolve_store, store_line

    store_uri, source = resolve_store(args.store)
    layers = tuple(args.layers)
    model = check_inputs(args.suspect, args.reference, args.model, layers, args.interpreters or ())
    if not store.exists(args.data):
        raise AuditInputError(f"--data {args.data!r}: no dataset there (a dataset root URI)")
    extra: dict[str, Any] = {}
    embedder = args.embedder or DEFAULT_EMBEDDER
    if args.sweep:
        base = sweep_baseline(store_uri, args.sweep, layers, args.split)
        ev = base["evaluation"]
        embedder = args.embedder or ev.get("embedder", DEFAULT_EMBEDDER)
        extra = {"baseline_tables": base["tables"], "baseline_pairs": base["pairs"], "k": ev.get("k", 10),
                 "tau_images": ev.get("tau_images", 10_000)}  # fmt: skip
    spec = AuditSpec(
        dataset=args.data, model=model, suspect=args.suspect, reference=args.reference, layers=layers,
        interpreters=tuple(args.interpreters or ()), split=args.split, embedder=embedder,
        map_images=args.map_images, baseline_steps=args.baseline_steps, seed=args.seed, **extra,
    )  # fmt: skip
    print(store_line(store_uri, source))
    res = run_audit(spec, store_uri)
    print(f"verdict: {res.verdict}")
    print(summary_table(res.summary))
    print(f"rule: {res.summary['rule']}")
    for uri in (res.table_uri, res.maps_uri, store.join(res.uri, "summary.json"), *res.pictures):
        if uri:
            print(f"wrote: {uri}")
    run_id = log_audit(store_uri, args, spec, res)
    print(f"mlflow: experiment {EXPERIMENT!r}, run {run_id}")
    return 0


def summary_table(summary: dict[str, Any]) -> str:
    head = f"{'part':<28} {'flagged':>9} {'share':>7} {'baseline':>9} {'p-value':>9}  significant"
    rows = [head, "-" * len(head)]
    for p in summary["parts"]:
        rows.append(
            f"{p['part']:<28} {p['flagged']:>4}/{p['judged']:<4} {p['share']:>7.3f} {p['baseline_share']:>9.3f} "
            f"{p['p_value']:>9.2g}  {'yes' if p['significant'] else 'no'}"
        )
    return "\n".join(rows)


def audit_metrics(summary: dict[str, Any]) -> dict[str, float]:
    out = {"manipulated": float(summary["verdict"] == "manipulated")}
    for p in summary["parts"]:
        name = p["part"].replace(" ", ".")
        out |= {
            f"{name}.{k}": float(p[k]) for k in ("flagged", "judged", "share", "baseline_share", "p_value")
        }
    return out


def log_audit(store_uri: str, args: Any, spec: AuditSpec, res: AuditResult) -> str:
    """One MLflow run: the audit's settings, its figures, the Parquet tables and pictures."""
    from mlflow.entities import Metric, Param, RunTag

    from orchestrator.spec import default_tracking_uri
    from orchestrator.tracking import SweepTracker, safe_params, safe_tags

    tracker = SweepTracker(getattr(args, "tracking_uri", None) or default_tracking_uri(store_uri), EXPERIMENT)
    c = tracker.client
    run = c.create_run(tracker.experiment_id, run_name=f"audit-{res.uri.rsplit('/', 1)[-1]}",
                       tags=safe_tags({"vizsweep.role": "audit", "vizsweep.verdict": res.verdict,
                                       "vizsweep.audit_dir": res.uri}))  # fmt: skip
    rid = run.info.run_id
    params = {"suspect": spec.suspect, "reference": spec.reference, "dataset": spec.dataset, "model": spec.model,
              "layers": ",".join(spec.layers), "interpreters": ",".join(spec.interpreters), "split": spec.split,
              "embedder": spec.embedder, "sweep": args.sweep or "", "verdict": res.verdict}  # fmt: skip
    now = int(time.time() * 1000)
    c.log_batch(
        rid, metrics=[Metric(k, v, now, 0) for k, v in audit_metrics(res.summary).items()],
        params=[Param(k, v) for k, v in safe_params(params).items()], tags=[RunTag("vizsweep.rule", "see summary.json")],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for uri in (res.table_uri, res.maps_uri, store.join(res.uri, "summary.json"), *res.pictures):
            if uri:
                local = os.path.join(tmp, uri.rsplit("/", 1)[-1])
                with open(local, "wb") as f:
                    f.write(store.read_bytes(uri))
                c.log_artifact(rid, local)
    c.set_terminated(rid, "FINISHED")
    return rid
