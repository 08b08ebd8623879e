"""How well does `vizsweep audit` tell manipulated units from honest fine-tuning? (SCIENCE.md §8)

Over a finished sweep's models, each measured against the model it started from on the
validation split (the per-unit tables of the metrics stage, exactly what the audit computes for
suspect = the trial's model, reference = its start): units of the attacked layers of push-down /
push-up / push-up-pairwise / fool-* trials are positives, units of the ``finetune`` baseline
trials negatives (on a pruning sweep these include the pruned variants fine-tuned without an
attack). A pruned variant measured against its unpruned base is not scored: structured pruning
changes the architecture, which the audit refuses.

Unit score (the audit's rule as one number): ``max(clip_delta / q99_B(clip_delta),
(1 − kendall_tau) / (1 − q01_B(kendall_tau)))`` with ``B`` the baseline units of that layer, so a
unit with score > 1 is the audit's flag; a unit killed by the model is +inf; units dead in the
reference are not judged. ``auc`` is the ROC AUC of that score (Mann-Whitney), also per metric;
``tpr`` / ``fpr`` are the flag rates (``fpr`` is in-sample: the thresholds come from the same
negatives, so it shows the rule's ~2 % design rate, not a held-out estimate).

    python benchmarks/audit.py SWEEP_ID [--store URI]

Last line: one JSON object {"auc": ..., "positives": n, "negatives": n, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from scipy.stats import rankdata

POSITIVE_PREFIXES = ("push-", "fool")
NEGATIVE = "finetune"


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney U)."""
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _tables(store_uri: str, sweep_id: str) -> list[tuple[str, str, bool, object]]:
    """(attack, layer, is_positive, unit table) for every finished trial's attacked layer on val."""
    from jobs.metrics import read_unit_metrics
    from orchestrator.audit_cmd import trial_tables
    from orchestrator.commands import find_sweep
    from orchestrator.plan import TrialPlan, stored_result
    from shared import store

    d = find_sweep(store_uri, sweep_id)
    out = []
    for raw in store.read_json(store.join(d, "plan.json")):
        p = TrialPlan.from_dict(raw)
        attack = p.job["attack"]
        positive = attack.startswith(POSITIVE_PREFIXES)
        if not (positive or attack == NEGATIVE):
            continue
        found = trial_tables(p, store_uri, stored_result)
        if found is None:
            continue
        for name, mdir in found[1].items():
            layer, split = name.split("/", 1)
            if split == p.job["val_split"] and layer in p.job["layers"]:
                out.append((attack, layer, positive, read_unit_metrics(mdir)))
    return out


def _scores(t, thr: dict[str, float]) -> np.ndarray:
    col = {n: t.column(n).to_numpy(zero_copy_only=False) for n in ("clip_delta", "kendall_tau", "dead_init",
                                                                     "dead_final")}  # fmt: skip
    cd = np.nan_to_num(col["clip_delta"].astype(float), nan=0.0)
    kt = np.nan_to_num(col["kendall_tau"].astype(float), nan=1.0)
    s = np.maximum(cd / max(thr["clip_delta"], 1e-12), (1 - kt) / max(1 - thr["kendall_tau"], 1e-12))
    d0, d1 = col["dead_init"].astype(bool), col["dead_final"].astype(bool)
    s[~d0 & d1] = np.inf
    return s[~d0]


def evaluate(store_uri: str, sweep_id: str) -> dict:
    from jobs.audit_flags import unit_thresholds

    rows = _tables(store_uri, sweep_id)
    if not rows:
        raise SystemExit(f"sweep {sweep_id!r} in {store_uri} has no finished trial with val unit tables")
    pos, neg, per_metric = [], [], {"clip_delta": ([], []), "one_minus_tau": ([], [])}
    for layer in sorted({ly for _, ly, _, _ in rows}):
        base = [t for a, ly, p, t in rows if ly == layer and not p]
        if not base:
            print(f"layer {layer}: no finetune baseline, skipped", file=sys.stderr)
            continue
        thr = unit_thresholds(base)
        for attack, _, positive, t in (r for r in rows if r[1] == layer):
            s = _scores(t, thr)
            (pos if positive else neg).append(s)
            alive = ~t.column("dead_init").to_numpy(zero_copy_only=False).astype(bool)
            cd = np.nan_to_num(t.column("clip_delta").to_numpy(zero_copy_only=False).astype(float)[alive])
            kt = np.nan_to_num(
                t.column("kendall_tau").to_numpy(zero_copy_only=False).astype(float)[alive], nan=1
            )
            per_metric["clip_delta"][0 if positive else 1].append(cd)
            per_metric["one_minus_tau"][0 if positive else 1].append(1 - kt)
            print(f"{attack:>18} {layer}: {len(s)} units, flagged {int((s > 1).sum())}", file=sys.stderr)
    p, n = np.concatenate(pos) if pos else np.array([]), np.concatenate(neg) if neg else np.array([])
    out = {"auc": roc_auc(p, n), "positives": int(len(p)), "negatives": int(len(n)),
           "tpr": float((p > 1).mean()) if len(p) else None, "fpr_in_sample": float((n > 1).mean()) if len(n) else None,
           "score": "max(clip_delta/q99_B, (1-kendall_tau)/(1-q01_B))", "sweep": sweep_id}  # fmt: skip
    for name, (ps, ns) in per_metric.items():
        out[f"auc_{name}"] = roc_auc(np.concatenate(ps), np.concatenate(ns)) if ps and ns else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="id of a finished sweep (vizsweep status lists them)")
    ap.add_argument(
        "--store",
        default=None,
        help="store holding the sweep (default: $VIZSWEEP_STORE, else ./vizsweep-store)",
    )
    args = ap.parse_args()
    from orchestrator.commands import resolve_store

    print(json.dumps(evaluate(resolve_store(args.store)[0], args.sweep)))


if __name__ == "__main__":
    main()
