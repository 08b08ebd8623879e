"""Do the attacks do what SCIENCE.md §2 says, on alexnet_mini and the synthetic data, on CPU?

Goals (conv5, all units, default AttackSpec): push-down mean top-5 overlap <= 0.3 and
mean Kendall-τ clearly below the fine-tuning baseline's, |ΔAcc| <= 1 pp; fine-tuning
baseline τ >= 0.9 and overlap >= 0.8; push-up puts a decoy-class image in the top-5 of
at least half of the units, |ΔAcc| <= 1 pp; each attack run <= 5 minutes. ``push-up`` is the
max form SCIENCE.md §2 decided on; ``push-up-pairwise`` the literal pairwise reading of Eq. 8.

Top-k sets on the train split (the attacked set, SCIENCE.md §3); Kendall-τ over the
whole val split (D_τ); accuracy top-1 on val. Last line: JSON.

    python benchmarks/attack_goals.py [--root /tmp/vz-attack] [--attacks finetune,push-down,push-up] \
        [--set lr=2e-4 --set push-up:epochs=4 ...]   # AttackSpec or attack-config overrides (JSON
                                                      # values), all attacks or one (ATTACK:FIELD=VALUE)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

LAYER = "conv5"


def kendall_diag(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        from shared.metrics import kendall_tau_diag

        return kendall_tau_diag(a, b)
    except ImportError:  # shared.metrics not there yet: scipy, one unit at a time
        from scipy.stats import kendalltau

        return np.array([kendalltau(a[:, j], b[:, j]).statistic for j in range(a.shape[1])])


def aligned(table: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from jobs.activations import read_table

    ids, labels, scores = read_table(table)
    order = np.argsort(ids.astype(str))
    return ids[order].astype(str), labels[order], scores[order]


def tables(data: str, weights: str, variant: str, state: str, store_uri: str) -> dict[str, str]:
    from jobs.activations import ActivationsSpec, run_activations

    out = {}
    for split in ("train", "val"):
        spec = ActivationsSpec(data, split, "alexnet_mini", weights, variant, (LAYER,), state_key=state)
        out[split] = run_activations(spec, store_uri).tables[LAYER]
    return out


def top_sets(table: str, k: int) -> tuple[list[list[str]], list[list[int]]]:
    from jobs.topk import run_topk

    t = run_topk(table, k).table
    ids = np.asarray(t.column("image_id").to_pylist()).reshape(-1, k)
    labels = np.asarray(t.column("label").to_pylist()).reshape(-1, k)
    return ids.tolist(), labels.tolist()


def val_accuracy(weights: str, data: str) -> float:
    import torch

    from shared.attacks import accuracy
    from shared.datasets import decode_image, iter_records
    from shared.models.zoo import build_model, model_info

    pre = model_info("alexnet_mini").preprocess
    recs = list(iter_records(data, "val"))
    x = torch.from_numpy(np.stack([decode_image(r["image"], pre) for r in recs]))
    y = torch.tensor([r["label"] for r in recs])
    model, _ = build_model("alexnet_mini", weights=weights)
    return accuracy(model, x, y)


def measure(name: str, args, base: str, variant: str, init: dict, init_top, store_uri: str) -> dict:
    from jobs.attack import AttackSpec, run_attack
    from shared.attacks import family_of

    over = {k: v for k, v in args.overrides.items() if ":" not in k}
    over |= {k.split(":", 1)[1]: v for k, v in args.overrides.items() if k.startswith(f"{name}:")}
    fam = family_of(name)
    fields = fam.config.model_fields
    entry = fam.config.model_validate({"name": name, **{k: v for k, v in over.items() if k in fields}})
    loop = {k: v for k, v in over.items() if k not in fields}
    spec = AttackSpec(dataset=args.data, model="alexnet_mini", weights=base, variant_key=variant, attack=name,
                      config=fam.job_config(entry), layers=(LAYER,), device="cpu", **loop)  # fmt: skip
    res = run_attack(spec, store_uri)
    final = tables(args.data, res.model_uri, variant, res.key, store_uri)
    fin_top, fin_labels = top_sets(final["train"], 5)
    overlap = np.mean([len(set(a[:5]) & set(b)) / 5 for a, b in zip(init_top[0], fin_top)])
    _, _, s0 = aligned(init["val"])
    _, _, s1 = aligned(final["val"])
    tau = kendall_diag(s0, s1)
    decoy = np.mean([1 in labs for labs in fin_labels])
    acc = val_accuracy(res.model_uri, args.data)
    return {
        "attack": name, "overlap5": float(overlap), "kendall_tau": float(np.nanmean(tau)), "acc": acc,
        "d_acc_pp": 100 * (acc - args.acc0), "decoy_top5_units": float(decoy), "seconds": res.seconds,
        "steps": res.steps, "skipped": res.skipped, "alpha_last": res.history[-1]["alpha"],
        "key": res.key,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/tmp/vz-attack")
    p.add_argument("--attacks", default="finetune,push-down,push-up,push-up-pairwise")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="AttackSpec override")
    args = p.parse_args()
    args.overrides = {"push-up:epochs": 4}  # it needs ~300 steps here (0.42 of units after 150)
    args.overrides |= {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    args.data = os.path.join(args.root, "data")
    store_uri = os.path.join(args.root, "store")

    from jobs.pretrain import PretrainSpec, run_pretrain
    from jobs.raysetup import ensure_ray
    from shared.synth import generate

    generate(args.data)  # 16 classes x 300 train x 50 val, 64 px; reused when present
    base = run_pretrain(PretrainSpec(dataset=args.data), store_uri)
    ensure_ray()
    init = tables(args.data, base.model_uri, base.key, "init", store_uri)
    init_top = top_sets(init["train"], 5)
    args.acc0 = val_accuracy(base.model_uri, args.data)
    init_decoy = np.mean([1 in labs for labs in init_top[1]])
    rows = [
        measure(a, args, base.model_uri, base.key, init, init_top, store_uri) for a in args.attacks.split(",")
    ]
    print(f"base model {base.key}: val acc {args.acc0:.4f}; units with a decoy image in the initial top-5: "
          f"{init_decoy:.2f}")  # fmt: skip
    head = f"{'attack':<10} {'overlap@5':>9} {'kendall-τ':>9} {'acc':>7} {'ΔAcc pp':>8} {'decoy@5':>8} {'steps':>6} {'s':>6}"
    print(head)
    for r in rows:
        print(f"{r['attack']:<10} {r['overlap5']:>9.3f} {r['kendall_tau']:>9.3f} {r['acc']:>7.4f} "
              f"{r['d_acc_pp']:>+8.2f} {r['decoy_top5_units']:>8.2f} {r['steps']:>6d} {r['seconds']:>6.0f}"
              f"{' (reused)' if r['skipped'] else ''}")  # fmt: skip
    print(
        json.dumps(
            {
                "acc0": args.acc0,
                "init_decoy_top5_units": init_decoy,
                "overrides": args.overrides,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
