"""Where each trial of a finished sweep spent its wall time: the parts its run logged as final
metrics (shared.timing: train, eval, tables, metrics, featureviz, save, log, other) and the share
outside training steps and evaluations (issue goal: at most 25 % on the demo settings). The
``pictures`` column is the before/after pictures' task, run after the trial has freed its GPU
(orchestrator.pictures): shown, but not part of the trial's wall time.

Reads MLflow only, so it measures any sweep after the fact; after ``make demo``:

    python benchmarks/trial_parts.py                      # the newest sweep of ./vizsweep-store
    python benchmarks/trial_parts.py SWEEP_ID --store PATH

Trials marked ``*`` were the first of their worker process (tag ``vizsweep.worker_trial`` = 1): Tune
reuses its trial actors, so those also pay the process's first uses.

Last line: one JSON object (per-trial shares, their mean weighted by wall time, the largest, the
largest among trials that were not their worker's first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.timing import share_outside


def newest_sweep(store_uri: str) -> str:
    """The sweep folder under ``{store}/sweeps`` whose status was written last."""
    root = os.path.join(store_uri, "sweeps")
    if not os.path.isdir(root):
        sys.exit(f"no sweeps under {root}: run `make demo` first, or pass --store")
    sweeps = [os.path.join(root, d) for d in os.listdir(root)]
    return os.path.basename(max(sweeps, key=os.path.getmtime))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", nargs="?", help="sweep id (default: the newest in the store)")
    ap.add_argument("--store", default="./vizsweep-store", help="a local store (default ./vizsweep-store)")
    ap.add_argument("--tracking-uri", help="default: the store's sqlite database")
    args = ap.parse_args()
    from orchestrator.spec import default_tracking_uri
    from orchestrator.tracking import find_child_runs
    from orchestrator.trial import TAG_WORKER_TRIAL

    sid = args.sweep or newest_sweep(args.store)
    uri = args.tracking_uri or default_tracking_uri(args.store)
    rows, first = [], set()
    for run in find_child_runs(uri, sid, "FINISHED"):
        parts = {k: v for k, v in run.data.metrics.items() if k.endswith("_s") and k != "alpha_wait_s"}
        if parts.get("wall_s"):
            rows.append((run.info.run_name, parts))
            if run.data.tags.get(TAG_WORKER_TRIAL) == "1":
                first.add(run.info.run_name)
    if not rows:
        sys.exit(f"sweep {sid}: no finished trial run with its parts (trials reused from the store log none)")
    names = sorted(
        {k for _, p in rows for k in p} - {"wall_s"}, key=lambda k: (k != "train_s", k != "eval_s", k)
    )
    print(f"sweep {sid}: seconds per part of each trial")
    print(f"{'trial':<44}" + "".join(f"{k[:-2]:>9}" for k in names) + f"{'wall':>9}{'outside':>9}")
    shares = {}
    for name, p in rows:
        shares[name] = round(share_outside(p), 3)
        cells = "".join(f"{p.get(k, 0.0):9.1f}" for k in names)
        mark = " *" if name in first else ""
        print(f"{name:<44}{cells}{p['wall_s']:9.1f}{100 * shares[name]:8.1f}%{mark}")
    walls = {name: p["wall_s"] for name, p in rows}
    weighted = sum(shares[n] * walls[n] for n in shares) / sum(walls.values())
    print(f"outside training steps and evaluations: {100 * weighted:.1f} % of all trials' wall time, "
          f"largest {100 * max(shares.values()):.1f} % (goal <= 25 %)")  # fmt: skip
    later = {n: v for n, v in shares.items() if n not in first}
    if first and later:
        print(f"* the first trial of its worker process: it also pays the process's first uses "
              f"(docs/costs.md); the other trials' largest share: {100 * max(later.values()):.1f} %")  # fmt: skip
    print(json.dumps({"benchmark": "trial-parts", "sweep": sid, "outside_share": round(weighted, 3),
                      "outside_share_max": max(shares.values()), "first_in_worker": sorted(first),
                      "outside_share_max_later": max(later.values()) if later else None,
                      "trials": shares}))  # fmt: skip


if __name__ == "__main__":
    main()
