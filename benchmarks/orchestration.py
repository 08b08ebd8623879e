"""What the orchestration costs: one attack run directly vs as a Tune trial with MLflow logging,
the cost of one α change, and the makespan of 16 equal trials on a simulated 4-node cluster.

1. overhead: the same attack + metrics on the same prepared store, called directly (the α
   rule in the loop) and as a Ray Tune trial (α from the scheduler, every step and the
   outputs logged to MLflow). Both start from the same committed initial tables.
2. α change: the time a trial waits for the controller's decision after each report
   (the ``alpha_wait_s`` step metric of the Tune run), mean and worst.
   The Tune trial's wall time per part (its final metrics ``train_s``, ``eval_s``, ``tables_s``,
   ``metrics_s``, ``other_s``, ...; shared.timing) and the share outside training steps and
   evaluations; the direct call's parts as ``direct_parts``.
3. makespan: ``ray.cluster_utils.Cluster`` with 4 nodes of 1 fake GPU each, 16 trials of
   equal length through the same Tune setup (AlphaScheduler, 1 GPU per trial), vs 4 waves.

Last line: one JSON object. ``--quick`` shortens the attack and the simulated trials; ``--scale N``
makes both N times longer (epochs of the attack, seconds of the simulated trials), to tell a fixed
start-up cost (``fixed_s``: the same at every length) from a cost that grows with the trial.
``--repeat R`` runs R rounds of both sides, alternating which goes first, and reports the medians:
on a machine whose speed drifts (a VM with steal time) one round can be 15-25 % off either way.

    python benchmarks/orchestration.py [--quick] [--scale N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.timing import share_outside


def sweep_dict(root: str, quick: bool, scale: int = 1) -> dict:
    return {
        "name": "bench",
        "store": os.path.join(root, "store0"),
        "dataset": {"uri": os.path.join(root, "data"),
                    "synth": {"classes": 16, "train_per_class": 40 if quick else 100, "val_per_class": 10}},
        "models": [{"name": "alexnet_mini", "weights": "pretrain"}],
        "layers": ["conv5"],
        "attacks": [{"name": "push-down", "k": 5}],
        "alpha": {"max_drop_pp": 100.0},  # the timed trial runs to its end: the budget never stops it
        "training": {"batch_size": 32, "epochs": (1 if quick else 2) * scale, "evals_per_epoch": 10, "eval_images": 128},
        "metrics": {"embedder": "reference", "k": 5, "tau_images": 160, "picture_units": 2},
    }  # fmt: skip


def overhead(root: str, quick: bool, scale: int = 1, repeat: int = 1) -> dict:
    from jobs.raysetup import ensure_ray
    from orchestrator.phases.prepare import prepare
    from orchestrator.phases.tables import initial_tables
    from orchestrator.spec import load_spec

    spec = load_spec(sweep_dict(root, quick, scale))
    ensure_ray()
    prep = prepare(spec)
    initial_tables(spec, prep)
    rounds = []
    for i in range(repeat):  # odd rounds run the Tune side first: a machine that drifts favours neither
        sides = ("direct", "tune") if i % 2 == 0 else ("tune", "direct")
        got = {side: (_direct if side == "direct" else _tuned)(root, spec, prep, i) for side in sides}
        rounds.append({**got["tune"], "direct_s": got["direct"][0], "direct_parts": got["direct"][1]})
    by_tune = sorted(rounds, key=lambda r: r["tune_s"])
    o = dict(by_tune[len(by_tune) // 2])  # the round of the median Tune time: its parts
    direct = statistics.median(r["direct_s"] for r in rounds)
    o |= {"direct_s": round(direct, 2), "overhead_ratio": round(o["tune_s"] / direct, 3),
          "fixed_s": round(o["tune_s"] - direct, 2),
          # before the trial's first line and after its last: Tune's start, the trial actor's process
          # start and imports (torch, Ray Tune, MLflow), Tune's end
          "tune_start_s": round(o["tune_s"] - o["wall_s"], 2), "outside_share": round(share_outside(o), 3),
          "rounds": [{"direct_s": r["direct_s"], "tune_s": r["tune_s"]} for r in rounds]}  # fmt: skip
    return o


def _store_copy(root: str, spec, side: str, i: int) -> str:
    """An identical copy of the prepared store, so that no run reuses another's work."""
    from shared import store

    dst = os.path.join(root, f"store-{side}-{i}")
    shutil.copytree(store.local_path(spec.store), dst, ignore=shutil.ignore_patterns("mlflow.db", "sweeps"))
    return dst


def _direct(root: str, spec, prep, i: int) -> tuple[float, dict]:
    """The attack + metrics called in this process, the α rule in the loop: (seconds, parts)."""
    import torch

    from jobs import decoded_splits
    from jobs.runners import runner_for
    from orchestrator.plan import plan_trials

    st = _store_copy(root, spec, "direct", i)
    (plan,) = plan_trials(spec.model_copy(update={"store": st}), prep)
    decoded_splits.forget()  # like the trial's fresh process, this call decodes its train split itself
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what Ray gives a 1-CPU trial (OMP_NUM_THREADS=1): same compute on both sides
    t = time.perf_counter()
    out = runner_for(plan.job["attack"]).run(plan.trial_job(), st)
    took = time.perf_counter() - t
    torch.set_num_threads(threads)
    return round(took, 2), {k: round(v, 3) for k, v in out.costs.items()}


def _tuned(root: str, spec, prep, i: int) -> dict:
    """The same attack as a Tune trial with MLflow logging, α from the scheduler: its time and parts."""
    from orchestrator.phases.attacks import run_trials
    from orchestrator.plan import plan_trials
    from orchestrator.progress import SweepProgress
    from orchestrator.tracking import SweepTracker, client, find_child_runs

    st = _store_copy(root, spec, "tune", i)
    name = f"bench{i}"
    tspec = spec.model_copy(update={"store": st, "tracking_uri": f"sqlite:///{root}/bench-mlflow-{i}.db"})
    (plan,) = plan_trials(tspec, prep)
    tracker = SweepTracker(tspec.tracking_uri, name)
    parent = tracker.parent(name, {}, {})
    progress = SweepProgress(1, 0, os.path.join(st, "sweeps", name), quiet=True)  # listens to the trial
    t = time.perf_counter()
    failed, _ = run_trials(tspec, name, [plan], tspec.tracking_uri, tracker.experiment_id, parent, 1)
    tuned = time.perf_counter() - t
    progress.close()
    assert not failed, failed
    (run,) = find_child_runs(tspec.tracking_uri, name)
    waits = [m.value for m in client(tspec.tracking_uri).get_metric_history(run.info.run_id, "alpha_wait_s")]
    parts = {k: round(v, 3) for k, v in run.data.metrics.items() if k.endswith("_s") and k != "alpha_wait_s"}
    missing = [k for k in PART_KEYS if k not in parts]
    assert not missing, f"the trial's final metrics lack {missing}: {sorted(run.data.metrics)}"
    return {"tune_s": round(tuned, 2), "alpha_changes": len(waits),
            "alpha_change_mean_s": round(sum(waits) / len(waits), 4), "alpha_change_max_s": round(max(waits), 4),
            **parts}  # fmt: skip


PART_KEYS = ("train_s", "eval_s", "tables_s", "metrics_s", "other_s", "wall_s")


def parts_line(o: dict) -> str:
    """One trial's wall time per part, and the share outside training steps and evaluations."""
    skip = {
        "rounds",
        "direct_s",
        "tune_s",
        "wall_s",
        "fixed_s",
        "tune_start_s",
        "alpha_change_mean_s",
        "alpha_change_max_s",
    }
    named = ", ".join(f"{k[:-2]} {v} s" for k, v in o.items() if k.endswith("_s") and k not in skip)
    return (f"Tune trial parts: {named} of {o['wall_s']} s wall; outside training steps and evaluations: "
            f"{100 * o['outside_share']:.1f} % (goal <= 25 % on the demo settings)")  # fmt: skip


def equal_trial(config: dict) -> None:
    from ray import tune

    for i in range(config["reports"]):
        time.sleep(config["seconds"] / config["reports"])  # stands for GPU work of a fixed length
        tune.report({"step": i + 1})


def makespan(quick: bool, scale: int = 1) -> dict:
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from orchestrator.alpha_scheduler import AlphaScheduler

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(4):
        cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    seconds = (4.0 if quick else 10.0) * scale
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tuner = tune.Tuner(
                tune.with_resources(equal_trial, {"cpu": 0.5, "gpu": 1}),
                param_space={"seconds": seconds, "reports": 4, "i": tune.grid_search(list(range(16)))},
                tune_config=tune.TuneConfig(scheduler=AlphaScheduler("makespan"), reuse_actors=True),
                run_config=tune.RunConfig(storage_path=tmp, name="makespan", verbose=0),
            )
            t = time.perf_counter()
            grid = tuner.fit()
            took = time.perf_counter() - t
            assert not grid.errors
    finally:
        ray.shutdown()
        cluster.shutdown()
    ideal = 16 / 4 * seconds
    return {
        "makespan_s": round(took, 2),
        "ideal_s": ideal,
        "makespan_ratio": round(took / ideal, 3),
        "makespan_fixed_s": round(took - ideal, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--makespan-only", action="store_true", help="only part 3 (no attack run)")
    ap.add_argument("--scale", type=int, default=1, help="N times longer trials (default 1)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="R rounds of the direct call and the Tune trial, alternating which goes first; the "
                         "medians are reported (a machine whose speed drifts, e.g. a VM with steal time)")  # fmt: skip
    args = ap.parse_args()
    from jobs.raysetup import quiet_ray_env

    quiet_ray_env()
    root = tempfile.mkdtemp(prefix="vz-orch-")
    if args.makespan_only:
        print(json.dumps({"benchmark": "orchestration-makespan", **makespan(args.quick, args.scale)}))
        return
    o = overhead(root, args.quick, args.scale, args.repeat)
    print(f"attack run: direct {o['direct_s']} s, as a Tune trial with MLflow {o['tune_s']} s "
          f"(ratio {o['overhead_ratio']}, {o['fixed_s']} s more); α change: mean {o['alpha_change_mean_s']} s, "
          f"worst {o['alpha_change_max_s']} s over {o['alpha_changes']}; outside the trial's own wall time "
          f"(Tune's start, the actor's process and imports): {o['tune_start_s']} s", flush=True)  # fmt: skip
    print(parts_line(o), flush=True)
    m = makespan(args.quick, args.scale)
    print(f"16 equal trials on 4 fake-GPU nodes: {m['makespan_s']} s vs ideal {m['ideal_s']} s "
          f"(ratio {m['makespan_ratio']})", flush=True)  # fmt: skip
    print(json.dumps({"benchmark": "orchestration", "ours": o["tune_s"], "baseline": o["direct_s"], "unit": "s",
                      "ratio": o["overhead_ratio"], **o, **m, "quick": args.quick, "scale": args.scale}))  # fmt: skip


if __name__ == "__main__":
    main()
