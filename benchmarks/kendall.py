"""All-pairs Kendall τ_b (SCIENCE.md §3, Kτ-W) vs scipy.stats.kendalltau, pair by pair.

256 units × 10,000 images (D_τ's default size), init vs final score matrices: 65,536 pairs.
scipy is timed on a random sample of pairs and scaled to all pairs (running it on all of them
takes minutes); the sampled values must match ours to 1e-6. numba compiles (or loads its cache)
in a warm-up on a small problem, timed separately. Last line: JSON.

    python benchmarks/kendall.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from scipy.stats import kendalltau

from shared.metrics.kendall import kendall_tau_matrix


def scores(n: int, units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-score-like matrices: nonnegative float32, some dead units (ties at 0), final ≈ init."""
    rng = np.random.default_rng(seed)
    init = (rng.lognormal(0.0, 1.0, (n, units)) * rng.random((n, units)) ** 2).astype(np.float32)
    init[:, :8] *= rng.random((n, 8)) < 0.3  # mostly-dead units: long runs of tied zeros
    final = (init * rng.lognormal(0.0, 0.5, (n, units))).astype(np.float32)
    return init, final


def _scipy(init, final, ia, ib, ref, lo: int, hi: int) -> tuple[float, float]:
    """scipy on sampled pairs lo..hi-1 into ref; (wall, CPU) seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(lo, hi):
        ref[k] = kendalltau(init[:, ia[k]], final[:, ib[k]]).statistic
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2,000 images instead of 10,000")
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--sample", type=int, default=200, help="pairs timed with scipy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = 2_000 if args.quick else 10_000
    j = args.units
    pairs = j * j
    init, final = scores(n, j, args.seed)
    print(
        f"kendall all pairs: {j} units x {n} images, {pairs} pairs"
        + (" (--quick: 2,000 images)" if args.quick else "")
    )

    t0 = time.perf_counter()
    kendall_tau_matrix(init[:200, :4], final[:200, :4])  # numba: compile or load from cache
    compile_s = time.perf_counter() - t0
    print(f"numba warm-up (compile or cache load): {compile_s:.2f} s, not counted")

    rng = np.random.default_rng(args.seed + 1)
    sample = rng.choice(pairs, size=min(args.sample, pairs), replace=False)
    ia, ib = np.divmod(sample, j)
    ref = np.empty(len(sample))
    half = len(sample) // 2
    # scipy runs half of its sample before ours and half after, so a change in machine load
    # during the run (shared cores) biases the ratio less
    scipy_s, scipy_cpu = _scipy(init, final, ia, ib, ref, 0, half)

    t0, c0 = time.perf_counter(), time.process_time()
    ours = kendall_tau_matrix(init, final)
    ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"ours: {ours_s:.3f} s for all {pairs} pairs ({ours_s / pairs * 1e6:.1f} us/pair, "
        f"sorting included; {ours_cpu:.2f} s CPU over all threads)"
    )

    more = _scipy(init, final, ia, ib, ref, half, len(sample))
    scipy_s, scipy_cpu = scipy_s + more[0], scipy_cpu + more[1]
    baseline_s = scipy_s / len(sample) * pairs
    print(
        f"scipy.stats.kendalltau: {scipy_s:.3f} s for {len(sample)} randomly sampled pairs "
        f"({scipy_s / len(sample) * 1e3:.3f} ms/pair), scaled to all {pairs} pairs: {baseline_s:.1f} s"
    )

    got = ours[ia, ib]
    if not np.array_equal(np.isnan(got), np.isnan(ref)):
        raise SystemExit("NaN pattern differs from scipy on the sampled pairs")
    max_abs_diff = float(np.nanmax(np.abs(got - ref))) if np.isfinite(ref).any() else 0.0
    print(f"sampled pairs: max |ours - scipy| = {max_abs_diff:.3g} (must be <= 1e-6)")
    if max_abs_diff > 1e-6:
        raise SystemExit(f"values differ from scipy: max abs diff {max_abs_diff}")
    cpu_ratio = scipy_cpu / len(sample) * pairs / ours_cpu
    print(
        f"speed-up: {baseline_s / ours_s:.1f}x wall-clock on {os.cpu_count()} cores "
        f"(load average {os.getloadavg()[0]:.1f}: other processes share them); "
        f"CPU-time ratio {cpu_ratio:.1f}x"
    )
    print(
        json.dumps(
            {
                "benchmark": "kendall_all_pairs",
                "ours": round(ours_s, 4),
                "baseline": round(baseline_s, 3),
                "unit": "s",
                "ratio": round(baseline_s / ours_s, 2),
                "max_abs_diff": max_abs_diff,
                "n_images": n,
                "n_units": j,
                "sampled_pairs": len(sample),
                "numba_warmup_s": round(compile_s, 2),
                "cpu_ratio": round(cpu_ratio, 2),
                "load_avg": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
