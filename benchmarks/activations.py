"""Throughput of the activations job vs a plain PyTorch DataLoader loop.

Both read the same Parquet shards on the same cores, decode and preprocess
the same way, run the same model with the same hooks and write the same
Parquet table. The job's forward stops after the last hooked layer (its
scores need nothing later); the baseline, as a researcher would write it,
runs the whole model. Ray's start-up is excluded (a sweep starts it
once); the job's own start-up (the executor choice, threads or actors, model
load) and its commit (checksums, manifests) are included. ``--executor``
forces one executor; by default the job picks (one node: local). Last line:
JSON, with the executor that ran.

    python benchmarks/activations.py [--quick] [--executor auto|local|ray-data]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def baseline(
    data: str, split: str, weights: str, layers: list[str], out: str, batch: int, workers: int
) -> int:
    """The loop a researcher would write: DataLoader workers decode, the main process runs the model."""
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    from shared.datasets import decode_image, iter_records, list_shards
    from shared.hooks import UnitScores
    from shared.models.zoo import build_model, model_info

    pre = model_info("alexnet_mini").preprocess
    shards = list_shards(data, split, "parquet")

    class Shards(IterableDataset):
        def __iter__(self):
            wi = get_worker_info()
            mine = shards if wi is None else shards[wi.id :: wi.num_workers]
            for rec in iter_records(data, split, "parquet", shards=mine):
                px = decode_image(rec["image"], pre)
                if px is not None:
                    yield rec["image_id"], rec["label"], torch.from_numpy(px)

    model, _ = build_model("alexnet_mini", weights=weights)
    model.eval()
    loader = DataLoader(Shards(), batch_size=batch, num_workers=workers)
    writers: dict[str, pq.ParquetWriter] = {}
    n = 0
    with torch.inference_mode(), UnitScores(model, "alexnet_mini", layers) as rec:
        for ids, labels, px in loader:
            model(px)
            for layer, s in rec.scores.items():
                j = s.shape[1]
                t = pa.table(
                    {
                        "image_id": pa.array(list(ids)),
                        "label": pa.array(labels.numpy()),
                        "scores": pa.FixedSizeListArray.from_arrays(pa.array(s.numpy().reshape(-1)), j),
                    }
                )
                if layer not in writers:
                    writers[layer] = pq.ParquetWriter(
                        os.path.join(out, f"{layer}.parquet"), t.schema, compression="zstd"
                    )
                writers[layer].write_table(t)
            n += len(ids)
    for w in writers.values():
        w.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller dataset (a few seconds per side)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side; the best is reported")
    ap.add_argument("--executor", default="auto", help="the job's executor: auto, local or ray-data")
    args = ap.parse_args()

    from jobs.activations import ActivationsSpec, run_activations
    from jobs.raysetup import ensure_ray
    from shared.models.zoo import build_model, save_checkpoint
    from shared.synth import generate

    cores = os.cpu_count() or 2
    per_class = 100 if args.quick else 400
    layers = ["conv3", "conv5"]
    tmp = tempfile.mkdtemp(prefix="vz-bench-")
    data = os.path.join(tmp, "data")
    print(f"generating {16 * per_class} synthetic train images ...", flush=True)
    generate(data, classes=16, train_per_class=per_class, val_per_class=1, size=64, seed=0, shard_size=256)
    torch.manual_seed(0)
    model, _ = build_model("alexnet_mini")
    weights = save_checkpoint(model, "alexnet_mini", os.path.join(tmp, "model.pt"))

    ensure_ray(num_cpus=cores)
    torch.set_num_threads(cores)
    ours_s, base_s, n_ours, n_base, executor = [], [], 0, 0, ""
    for r in range(args.repeats):
        out = os.path.join(tmp, f"base-{r}")
        os.makedirs(out)
        t = time.perf_counter()
        n_base = baseline(data, "train", weights, layers, out, batch=256, workers=max(1, cores - 1))
        base_s.append(time.perf_counter() - t)
        spec = ActivationsSpec(
            dataset=data, split="train", model="alexnet_mini", weights=weights,
            variant_key=f"bench{r}", layers=tuple(layers), batch_size=256, executor=args.executor,
        )  # fmt: skip
        t = time.perf_counter()
        res = run_activations(spec, os.path.join(tmp, "store"))
        ours_s.append(time.perf_counter() - t)
        n_ours, executor = res.rows, res.executor
        print(
            f"run {r}: baseline {n_base / base_s[-1]:.0f} img/s, "
            f"ours ({executor}) {n_ours / ours_s[-1]:.0f} img/s",
            flush=True,
        )
    assert n_ours == n_base, (n_ours, n_base)
    ours, base = n_ours / min(ours_s), n_base / min(base_s)
    print(
        json.dumps(
            {
                "benchmark": "activations",
                "ours": round(ours, 1),
                "baseline": round(base, 1),
                "unit": "images/s",
                "ratio": round(ours / base, 3),
                "executor": executor,
                "images": n_ours,
                "layers": layers,
                "cores": cores,
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
