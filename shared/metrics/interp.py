"""Interpretation metrics of SCIENCE.md §3 (thesis §3.1.4), vectorized over units.

Inputs are plain arrays, so the metrics job (or a test) can feed them from anywhere:

- unit scores ``a_{l,j}(x)`` over ``D_τ`` for the initial and the final model: ``[n, J]``,
  rows = the same images in the same order (Kendall-τ, Kτ-W);
- the top-k index sets ``T_j^{init}``, ``T_j^{final}`` on the reported split: ``[J, k]``
  (top-k overlap);
- the embeddings ``e(x)`` of those images, in the same order: ``[J, k, d]`` (CLIP-δ, CLIP-W).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from shared.metrics.kendall import kendall_tau_diag, kendall_tau_matrix

__all__ = [
    "COUNTS",
    "DEAD_COLUMNS",
    "DECOY",
    "METRIC_COLUMNS",
    "accuracy",
    "alive_units",
    "clip_delta",
    "clip_matrix",
    "clip_w",
    "dead_units",
    "decoy_in_top",
    "delta_acc",
    "kendall_per_unit",
    "kendall_tau_w",
    "layer_means",
    "topk_indices",
    "topk_overlap",
    "unit_metrics",
    "unit_state_columns",
]

METRIC_COLUMNS = ("kendall_tau", "kendall_tau_w", "clip_delta", "clip_w", "topk_overlap")
DECOY = "decoy_top5"  # per unit 1.0/0.0: a decoy-class image in the final top-5 (thesis Fig. H)
DEAD_COLUMNS = ("dead_init", "dead_final")  # per unit: score 0 on every image of the split (§3)
COUNTS = ("units_dead_init", "units_killed")  # per layer: dead at the start; alive before, dead after


def topk_indices(scores: np.ndarray, image_ids: np.ndarray, k: int) -> np.ndarray:
    """Row indices of each unit's top-k images -> [J, k], largest score first (SCIENCE.md §1).

    Equal scores are ordered by ``image_ids`` ascending (numeric for numbers, lexicographic for
    strings: pass the ids as strings to match :class:`shared.topk.StreamingTopK`), so the result
    does not depend on row order.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [n_images, n_units], got shape {scores.shape}")
    n = scores.shape[0]
    ids = np.asarray(image_ids)
    if ids.shape != (n,):
        raise ValueError(f"image_ids must have one id per row ({n}), got shape {ids.shape}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of images ({n}), got {k}")
    id_rank = np.empty(n, np.int64)
    id_rank[np.argsort(ids, kind="stable")] = np.arange(n)
    rows = np.arange(n)
    if n > 4 * k:
        # Only rows reaching some unit's k-th largest score can enter a top-k; keeping every
        # row tied with that score leaves the id tie-break exact.
        kth = np.partition(scores, n - k, axis=0)[n - k]
        rows = np.flatnonzero((scores >= kth).any(axis=1))
    sub = scores[rows]
    # lexsort: last key first, so score descending, then id rank ascending, per column
    desc = -sub.astype(np.float64)  # exact for float32 and for integers below 2**53
    order = np.lexsort((np.broadcast_to(id_rank[rows, None], sub.shape), desc), axis=0)[:k]
    return rows[order].T.copy()


def kendall_per_unit(init: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Kendall-τ_j = τ_b(a_j(·; θ0), a_j(·; θ)) over D_τ -> [J]; near 1: same ranking as before."""
    return kendall_tau_diag(init, final)


def _max_off_diagonal(m: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Row-wise max over i != units[r] of m[r, i], ignoring NaN (constant units); NaN if none."""
    m = np.array(m, dtype=np.float64)
    m[np.arange(len(units)), units] = np.nan
    out = np.full(len(units), np.nan)
    valid = ~np.isnan(m).all(axis=1)
    out[valid] = np.nanmax(m[valid], axis=1)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def _units(units: Sequence[int] | np.ndarray | None, j: int) -> np.ndarray:
    if units is None:
        return np.arange(j)
    u = np.asarray(units, dtype=np.int64).reshape(-1)
    if u.size and (u.min() < 0 or u.max() >= j):
        raise ValueError(f"units must be unit indices in [0, {j}), got {u.tolist()}")
    return u


def kendall_tau_w(
    init: np.ndarray, final: np.ndarray, units: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """Kτ-W_j = max_{i≠j} τ(a_j^init, a_i^final) / max_{i≠j} τ(a_j^init, a_i^init) -> [len(units)].

    Near or below 1: unit j's ranking did not move to another unit ("whack-a-mole"). The maxima
    run over all units of the layer; ``units`` (default all) only picks the rows.
    """
    init = np.asarray(init)
    u = _units(units, init.shape[1])
    return _kendall_w_rows(init, u, kendall_tau_matrix(init[:, u], final))


def _kendall_w_rows(init: np.ndarray, u: np.ndarray, t_if: np.ndarray) -> np.ndarray:
    """Kτ-W for rows ``u``, given t_if[r, i] = τ(a_{u[r]}^init, a_i^final)."""
    if np.array_equal(u, np.arange(init.shape[1])):
        t_ii = kendall_tau_matrix(init)  # symmetric: half the pairs
    else:
        t_ii = kendall_tau_matrix(init[:, u], init)
    return _ratio(_max_off_diagonal(t_if, u), _max_off_diagonal(t_ii, u))


def clip_matrix(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """C_{j,p} = mean over x ∈ T_j^a, y ∈ T_p^b of cos(e(x), e(y)), all k×k pairs -> [J_a, J_b].

    Identical images are included (SCIENCE.md §3). Embeddings [J, k, d] are L2-normalized here.
    """
    m_a = _mean_direction(emb_a, "emb_a")
    m_b = _mean_direction(emb_b, "emb_b")
    if m_a.shape[1] != m_b.shape[1]:
        raise ValueError(f"embedding sizes differ: {m_a.shape[1]} vs {m_b.shape[1]}")
    # mean_{x,y} <e(x), e(y)> = <mean_x e(x), mean_y e(y)> by bilinearity: exact, and
    # O(J k d + J² d) instead of O(J² k² d).
    return m_a @ m_b.T


def _mean_direction(emb: np.ndarray, name: str) -> np.ndarray:
    """Mean over k of the L2-normalized embeddings: [J, k, d] -> [J, d], in float64."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 3:
        raise ValueError(f"{name} must be [n_units, k, d], got shape {emb.shape}")
    norm = np.linalg.norm(emb, axis=2, keepdims=True)
    if (norm == 0).any():
        raise ValueError(f"{name} has an all-zero embedding; cosine similarity is undefined for it")
    return (emb / norm).mean(axis=1)


def _square(c: np.ndarray, name: str) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"{name} must be a square [J, J] matrix with J >= 2, got shape {c.shape}")
    return c


def clip_delta(c_ii: np.ndarray, c_if: np.ndarray) -> np.ndarray:
    """CLIP-δ_j = (C^{ii}_{jj} − C^{if}_{jj}) / ((1/(J−1)) Σ_{p≠j} C^{ii}_{jp}) -> [J].

    The semantic change of unit j's top-k images, in units of its mean similarity to the other
    units' top-k images. Higher: larger change; 0 when the top-k sets are unchanged.
    """
    c_ii = _square(c_ii, "C_ii")
    c_if = _square(c_if, "C_if")
    j = c_ii.shape[0]
    others = (c_ii.sum(axis=1) - np.diag(c_ii)) / (j - 1)
    return _ratio(np.diag(c_ii) - np.diag(c_if), others)


def clip_w(c_ii: np.ndarray, c_if: np.ndarray) -> np.ndarray:
    """CLIP-W_j = max_{i≠j} C^{if}_{j,i} / max_{i≠j} C^{ii}_{j,i} -> [J].

    Above 1: unit j's new top-k images look more like another unit's old ones than any other
    unit's old top-k did (the concept moved to unit i).
    """
    c_ii = _square(c_ii, "C_ii")
    c_if = _square(c_if, "C_if")
    u = np.arange(c_ii.shape[0])
    return _ratio(_max_off_diagonal(c_if, u), _max_off_diagonal(c_ii, u))


def topk_overlap(t_init: np.ndarray, t_final: np.ndarray) -> np.ndarray:
    """|T_j^init ∩ T_j^final| / k per unit -> [J] (index sets [J, k] without repeats)."""
    t_init = np.asarray(t_init)
    t_final = np.asarray(t_final)
    if t_init.ndim != 2 or t_init.shape != t_final.shape:
        raise ValueError(f"top-k sets must both be [J, k], got {t_init.shape} and {t_final.shape}")
    hits = (t_init[:, :, None] == t_final[:, None, :]).any(axis=2).sum(axis=1)
    return hits / t_init.shape[1]


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in %: ``pred`` is class indices [n] or scores/logits [n, C] (argmax)."""
    pred = np.asarray(pred)
    labels = np.asarray(labels)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.shape != labels.shape or pred.ndim != 1 or pred.size == 0:
        raise ValueError(f"need one prediction per label: pred {pred.shape}, labels {labels.shape}")
    return float(100.0 * np.mean(pred == labels))


def delta_acc(*, init: float, final: float) -> float:
    """ΔAcc = Acc(θ) − Acc(θ0) in percentage points (negative: the attack cost accuracy)."""
    return float(final) - float(init)


def unit_metrics(
    *,
    scores_init: np.ndarray,
    scores_final: np.ndarray,
    topk_init: np.ndarray,
    topk_final: np.ndarray,
    emb_init: np.ndarray,
    emb_final: np.ndarray,
    units: Sequence[int] | np.ndarray | None = None,
    dead_init: np.ndarray | None = None,
    dead_final: np.ndarray | None = None,
    decoy_top5: np.ndarray | None = None,
) -> pa.Table:
    """Per-unit §3 metrics of one layer -> table: unit (int64) and METRIC_COLUMNS (float64).

    - ``scores_init``/``scores_final`` [n, J]: a_{l,j} of θ0 and θ over D_τ, same images, same rows;
    - ``topk_init``/``topk_final`` [J, k]: T_j^init and T_j^final on the reported split, as image
      indices or ids (e.g. from :func:`topk_indices`); only compared with each other;
    - ``emb_init``/``emb_final`` [J, k, d]: e(x) of those images, in the same order;
    - ``units``: the rows to report (e.g. the attacked units; default all). Maxima over i≠j and
      the CLIP-δ normalizer always run over all J units of the layer;
    - ``dead_init``/``dead_final`` [J] bool (see :func:`dead_units`) and ``decoy_top5`` [J] (see
      :func:`decoy_in_top`), optional: added as columns of the same names (after the metrics).
    """
    init = np.asarray(scores_init)
    final = np.asarray(scores_final)
    if init.ndim != 2 or init.shape != final.shape:
        raise ValueError(
            f"scores_init and scores_final must both be [n, J], got {init.shape} and {final.shape}"
        )
    j = init.shape[1]
    for name, arr, dims in (
        ("topk_init", topk_init, 2),
        ("topk_final", topk_final, 2),
        ("emb_init", emb_init, 3),
        ("emb_final", emb_final, 3),
    ):
        shape = np.shape(arr)
        if len(shape) != dims or shape[0] != j:
            raise ValueError(f"{name} must have {dims} dimensions and {j} units first, got shape {shape}")
    u = _units(units, j)
    t_if = kendall_tau_matrix(init[:, u], final)  # rows: the reported units; diagonal = Kendall-τ
    c_ii = clip_matrix(emb_init, emb_init)
    c_if = clip_matrix(emb_init, emb_final)
    values = {
        "kendall_tau": t_if[np.arange(len(u)), u],
        "kendall_tau_w": _kendall_w_rows(init, u, t_if),
        "clip_delta": clip_delta(c_ii, c_if)[u],
        "clip_w": clip_w(c_ii, c_if)[u],
        "topk_overlap": topk_overlap(topk_init, topk_final)[u],
    }
    columns = {"unit": pa.array(u, pa.int64())}
    columns.update(
        {name: pa.array(np.asarray(values[name], np.float64), pa.float64()) for name in METRIC_COLUMNS}
    )
    columns.update(unit_state_columns(j, u, dead_init, dead_final, decoy_top5))
    return pa.table(columns)


def unit_state_columns(
    j: int,
    units: np.ndarray,
    dead_init: np.ndarray | None,
    dead_final: np.ndarray | None,
    decoy_top5: np.ndarray | None = None,
) -> dict[str, pa.Array]:
    """The optional per-unit columns (decoy_top5, dead_init, dead_final) for rows ``units`` of [J] arrays."""
    out: dict[str, pa.Array] = {}
    for name, arr, typ in (
        (DECOY, decoy_top5, pa.float64()),
        ("dead_init", dead_init, pa.bool_()),
        ("dead_final", dead_final, pa.bool_()),
    ):
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.shape != (j,):
            raise ValueError(f"{name} must have one value per unit of the layer ({j}), got shape {arr.shape}")
        out[name] = pa.array(arr[units].astype(np.float64 if name == DECOY else bool), typ)
    return out


def dead_units(top_scores: np.ndarray) -> np.ndarray:
    """[J, k] top-k scores of each unit on a split -> [J] bool: score 0 on every image (§3, dead units).

    Scores are squared norms (SCIENCE.md §1), never negative, so the top-k scores are all 0
    exactly when every score of the split is: no pass over the whole table is needed.
    """
    top_scores = np.asarray(top_scores)
    if top_scores.ndim != 2:
        raise ValueError(f"top_scores must be [n_units, k], got shape {top_scores.shape}")
    if (top_scores < 0).any():
        raise ValueError("top_scores has negative values; unit scores are squared norms (SCIENCE.md §1)")
    return ~(top_scores != 0).any(axis=1)


def decoy_in_top(top_labels: np.ndarray, decoy_class: int, n: int = 5) -> np.ndarray:
    """[J, k] labels of each unit's top-k images (rank order) -> [J] 1.0 where a decoy-class image is
    among the first ``n`` (thesis Fig. H: push-up's goal, a goldfish in the top-5), else 0.0."""
    top_labels = np.asarray(top_labels)
    if top_labels.ndim != 2 or top_labels.shape[1] < n:
        raise ValueError(f"top_labels must be [n_units, k] with k >= {n}, got shape {top_labels.shape}")
    return (top_labels[:, :n] == decoy_class).any(axis=1).astype(np.float64)


def alive_units(table: pa.Table) -> np.ndarray:
    """[rows] bool: alive in both states (no dead column: every unit is alive)."""
    alive = np.ones(table.num_rows, bool)
    for name in DEAD_COLUMNS:
        if name in table.column_names:
            alive &= ~table.column(name).to_numpy(zero_copy_only=False).astype(bool)
    return alive


def layer_means(table: pa.Table) -> dict[str, float]:
    """Layer figures: mean of each metric over the table's rows (the attacked units) alive in both states.

    SCIENCE.md §3, dead units: a unit dead before or after has no top-k and no ranking, so every
    column averages the same units, those alive in both states; the dead are counted instead
    (``units_dead_init``, ``units_killed``: alive before, dead after; only with the dead columns).
    ``decoy_top5``, when the table has it, is the share of those units with a decoy in the top-5.
    Units whose value is NaN (a score column constant on D_τ has no Kendall τ) are left out of
    that metric's mean; a metric with no value at all is NaN.
    """
    alive = alive_units(table)
    out: dict[str, float] = {}
    for name in (*METRIC_COLUMNS, *([DECOY] if DECOY in table.column_names else [])):
        v = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)[alive]
        out[name] = float(np.mean(v[~np.isnan(v)])) if (~np.isnan(v)).any() else float("nan")
    if all(name in table.column_names for name in DEAD_COLUMNS):
        d0, d1 = (table.column(n).to_numpy(zero_copy_only=False).astype(bool) for n in DEAD_COLUMNS)
        dead_init, killed = COUNTS
        out[dead_init] = float(d0.sum())
        out[killed] = float((~d0 & d1).sum())
    return out
