"""The audit's decision rule (SCIENCE.md §8): thresholds from fine-tuning baselines, flags, verdict.

Pure NumPy on per-unit tables (``unit_metrics.parquet`` columns) and per-image map test losses, so
the rule can be read and tested without a model. The rule, in full:

- Units, per layer. The baseline sample is every unit alive in both states of every baseline
  table of that layer (fine-tuned copies measured against their own start, §3). A unit of the
  suspect that is alive in the reference is flagged when ``clip_delta > q99(baseline clip_delta)``
  or ``kendall_tau < q01(baseline kendall_tau)`` (a tolerance of 1e-9 absorbs float noise), or
  when it was killed (alive in the reference, dead in the suspect: §3 counts that as a visible
  change). Units dead in the reference are not judged.
- Maps, per interpreter: per validation image the §6 test losses between the suspect's and the
  reference's heatmaps; an image is flagged when its top-k test loss falls below the baseline's
  1st percentile (attention left the reference's top 10 % positions) or its centre-mass distance
  exceeds the baseline's 99th percentile.
- Verdict. ``p0`` = the share of the baseline's own units (images) the rule flags, at least
  1 %. A layer (interpreter) is significant when its flagged share exceeds ``p0`` and the
  one-sided binomial tail ``P(X >= flagged | n, p0)`` is below ``ALPHA_VERDICT`` (0.001). The
  model is "manipulated" when any layer or interpreter is significant, else "no evidence of
  manipulation".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

Q_HIGH, Q_LOW = 0.99, 0.01  # baseline quantiles: CLIP-δ / centre-mass above, Kendall-τ / top-k below
TOL = 1e-9  # float noise: identical models must not be flagged against an all-identical baseline
P0_FLOOR = 0.01  # the smallest false-flag share assumed for the baseline
ALPHA_VERDICT = 1e-3  # binomial tail below which a layer's flagged share is not chance
MANIPULATED, NO_EVIDENCE = "manipulated", "no evidence of manipulation"
RULE = (
    f"unit flagged: clip_delta > q{int(Q_HIGH * 100)}(baseline) or kendall_tau < q{int(Q_LOW * 100)}(baseline) "
    f"or killed; map flagged: topk test loss < q{int(Q_LOW * 100)}(baseline) or centre-mass distance > "
    f"q{int(Q_HIGH * 100)}(baseline); verdict '{MANIPULATED}' when in any layer / interpreter the flagged "
    f"share exceeds the baseline's own share p0 (>= {P0_FLOOR}) with binomial tail P(X>=flagged|n,p0) < {ALPHA_VERDICT}"
)


def _col(t: pa.Table, name: str) -> np.ndarray:
    return t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def _alive(t: pa.Table) -> np.ndarray:
    d0, d1 = (t.column(n).to_numpy(zero_copy_only=False).astype(bool) for n in ("dead_init", "dead_final"))
    return ~d0 & ~d1


def unit_thresholds(baseline: Sequence[pa.Table]) -> dict[str, float]:
    """``clip_delta`` (q99) and ``kendall_tau`` (q01) of the alive units of the baseline tables."""
    cd = np.concatenate([_col(t, "clip_delta")[_alive(t)] for t in baseline]) if baseline else np.array([])
    kt = np.concatenate([_col(t, "kendall_tau")[_alive(t)] for t in baseline]) if baseline else np.array([])
    cd, kt = cd[np.isfinite(cd)], kt[np.isfinite(kt)]
    if not len(cd) or not len(kt):
        raise ValueError("the baseline tables hold no unit alive before and after: nothing to calibrate on")
    return {"clip_delta": float(np.quantile(cd, Q_HIGH)), "kendall_tau": float(np.quantile(kt, Q_LOW)),
            "baseline_units": int(len(cd))}  # fmt: skip


def unit_flags(t: pa.Table, thr: dict[str, float]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(judged, flagged, reason) per row: judged = alive in the reference."""
    d0, d1 = (t.column(n).to_numpy(zero_copy_only=False).astype(bool) for n in ("dead_init", "dead_final"))
    cd, kt = _col(t, "clip_delta"), _col(t, "kendall_tau")
    high = np.nan_to_num(cd, nan=-np.inf) > thr["clip_delta"] + TOL
    low = np.nan_to_num(kt, nan=np.inf) < thr["kendall_tau"] - TOL
    killed = ~d0 & d1
    judged = ~d0
    flagged = judged & (killed | high | low)
    reasons = []
    for i in range(len(cd)):
        r = [n for n, on in (("killed", killed[i]), ("clip_delta", high[i]), ("kendall_tau", low[i])) if on]
        reasons.append("dead in reference" if not judged[i] else ",".join(r))
    return judged, flagged, reasons


def map_thresholds(topk: np.ndarray, center: np.ndarray) -> dict[str, float]:
    """Top-k test loss (q01) and centre-mass distance (q99) of the baseline's images."""
    topk, center = topk[np.isfinite(topk)], center[np.isfinite(center)]
    if not len(topk) or not len(center):
        raise ValueError("the baseline's maps gave no finite test loss: nothing to calibrate on")
    return {"topk": float(np.quantile(topk, Q_LOW)), "center_mass": float(np.quantile(center, Q_HIGH))}


def map_flags(topk: np.ndarray, center: np.ndarray, thr: dict[str, float]) -> np.ndarray:
    return (np.nan_to_num(topk, nan=np.inf) < thr["topk"] - TOL) | (
        np.nan_to_num(center, nan=-np.inf) > thr["center_mass"] + TOL
    )


def binomial_tail(flagged: int, n: int, p0: float) -> float:
    """``P(X >= flagged)`` for ``X ~ Binomial(n, p0)``."""
    from scipy.stats import binom

    return float(binom.sf(flagged - 1, n, p0)) if n else 1.0


def judge(flagged: int, n: int, baseline_share: float) -> dict[str, Any]:
    """One layer's (interpreter's) verdict inputs and outcome, as the summary reports them."""
    p0 = max(float(baseline_share), P0_FLOOR)
    share = flagged / n if n else 0.0
    tail = binomial_tail(flagged, n, p0)
    return {"flagged": int(flagged), "judged": int(n), "share": share, "baseline_share": float(baseline_share),
            "p0": p0, "p_value": tail, "significant": bool(n and share > p0 and tail < ALPHA_VERDICT)}  # fmt: skip


def verdict(parts: Sequence[dict[str, Any]]) -> str:
    return MANIPULATED if any(p["significant"] for p in parts) else NO_EVIDENCE
