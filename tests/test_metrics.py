"""SCIENCE.md §3 metrics: Kendall τ_b equals scipy's (ties included), hand-checked CLIP/overlap/Kτ-W."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau

from shared.metrics import (
    METRIC_COLUMNS,
    accuracy,
    clip_delta,
    clip_matrix,
    clip_w,
    dead_units,
    decoy_in_top,
    delta_acc,
    kendall_per_unit,
    kendall_tau_b,
    kendall_tau_diag,
    kendall_tau_matrix,
    kendall_tau_w,
    layer_means,
    topk_indices,
    topk_overlap,
    unit_metrics,
)


def _scipy_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(
        [[kendalltau(a[:, i], b[:, j]).statistic for j in range(b.shape[1])] for i in range(a.shape[1])]
    )


def _tied_scores(
    rng: np.random.Generator, n: int, j: int, levels: int | None, dtype=np.float64
) -> np.ndarray:
    """Scores with ties: rounded to a few levels, a constant column, a mostly-zero (dead) column."""
    x = rng.normal(size=(n, j))
    if levels:
        x = np.round(x * levels / 3)
    x[:, 0] = 1.5  # constant: τ is NaN, as in scipy
    x[:, 1] = np.where(rng.random(n) < 0.8, 0.0, np.abs(x[:, 1]))  # long run of tied zeros
    if j > 3:
        x[: n // 2, 3] = -0.0  # -0.0 ties with 0.0
        x[n // 2 :, 3] = np.where(rng.random(n - n // 2) < 0.5, 0.0, x[n // 2 :, 3])
    return x.astype(dtype)


def _assert_matches_scipy(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    assert np.abs(got[finite] - want[finite]).max(initial=0.0) <= 1e-6


@pytest.mark.parametrize("n", [2, 3, 5, 64, 65, 200, 1000])
@pytest.mark.parametrize("levels", [2, 7, None])
def test_kendall_matrix_equals_scipy_with_ties(n, levels):
    rng = np.random.default_rng(n * 10 + (levels or 0))
    a = _tied_scores(rng, n, 6, levels)
    b = _tied_scores(rng, n, 5, levels, dtype=np.float32)
    b[:, 2] = a[:, 2] + (rng.random(n) < 0.1)  # strongly related pair with joint ties
    _assert_matches_scipy(kendall_tau_matrix(a, b), _scipy_matrix(a, b))


@pytest.mark.parametrize("n", [2, 3, 130, 1000])
def test_symmetric_shortcut_and_diagonal_equal_scipy(n):
    rng = np.random.default_rng(n)
    a = _tied_scores(rng, n, 7, 4)
    b = _tied_scores(rng, n, 7, None, dtype=np.float32)
    want = _scipy_matrix(a, a)
    got = kendall_tau_matrix(a)
    _assert_matches_scipy(got, want)
    np.testing.assert_array_equal(got, got.T)
    assert kendall_tau_matrix(a, a).shape == (7, 7)  # `b is a` takes the same path
    _assert_matches_scipy(kendall_tau_diag(a, b), np.diag(_scipy_matrix(a, b)))


def test_kendall_tau_b_vectors():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, 300).astype(np.float32)
    y = x + rng.integers(0, 3, 300)
    assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau_b([1.0], [2.0]))
    assert np.isnan(kendall_tau_b([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="same length"):
        kendall_tau_b([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        kendall_tau_matrix(np.array([[1.0], [np.nan]]))


def test_kendall_large_n_uses_wide_lanes():
    """n > 32767 switches the in-bucket compare from int16 to int32 lanes."""
    rng = np.random.default_rng(1)
    n = 40_000
    a = rng.integers(0, 5000, (n, 2)).astype(np.float32)
    b = (a + rng.integers(0, 3000, (n, 2))).astype(np.float32)
    _assert_matches_scipy(kendall_tau_matrix(a, b), _scipy_matrix(a, b))


def test_topk_indices_tie_break_by_image_id():
    scores = np.array([[1.0, 5.0], [3.0, 5.0], [3.0, 0.0], [2.0, 5.0], [3.0, 1.0]], dtype=np.float32)
    ids = np.array(["e", "d", "c", "b", "a"])
    # unit 0: 3.0 at rows 1, 2, 4 with ids d, c, a -> a, c, d
    np.testing.assert_array_equal(topk_indices(scores, ids, 3)[0], [4, 2, 1])
    # unit 1: three 5.0s at rows 0, 1, 3 with ids e, d, b -> b, d, e
    np.testing.assert_array_equal(topk_indices(scores, ids, 3)[1], [3, 1, 0])
    # row order does not matter
    perm = np.array([3, 0, 4, 1, 2])
    got = perm[topk_indices(scores[perm], ids[perm], 3)]
    np.testing.assert_array_equal(got, topk_indices(scores, ids, 3))
    with pytest.raises(ValueError, match="k must be"):
        topk_indices(scores, ids, 6)


def test_topk_indices_matches_full_sort_on_large_input():
    rng = np.random.default_rng(3)
    n, j, k = 2000, 9, 10
    scores = rng.integers(0, 30, (n, j)).astype(np.float32)  # many ties at the top
    ids = rng.permutation(n)
    got = topk_indices(scores, ids, k)
    for u in range(j):
        want = sorted(range(n), key=lambda i: (-scores[i, u], ids[i]))[:k]
        assert got[u].tolist() == want


def test_clip_matrix_equals_explicit_pair_loop():
    rng = np.random.default_rng(0)
    ja, jb, k, d = 3, 4, 5, 8
    ea = rng.normal(size=(ja, k, d)).astype(np.float32)
    eb = rng.normal(size=(jb, k, d)).astype(np.float32)
    want = np.zeros((ja, jb))
    for j in range(ja):
        for p in range(jb):
            sims = [
                float(ea[j, x] @ eb[p, y]) / (np.linalg.norm(ea[j, x]) * np.linalg.norm(eb[p, y]))
                for x in range(k)
                for y in range(k)
            ]
            want[j, p] = np.mean(sims)
    np.testing.assert_allclose(clip_matrix(ea, eb), want, atol=1e-6)


def test_identical_init_and_final_give_neutral_metrics():
    rng = np.random.default_rng(0)
    n, j, k, d = 300, 4, 5, 16
    scores = rng.random((n, j))
    topk = topk_indices(scores, np.arange(n), k)
    emb = rng.normal(size=(j, k, d))
    c = clip_matrix(emb, emb)
    np.testing.assert_allclose(clip_delta(c, c), 0.0, atol=1e-12)
    np.testing.assert_allclose(clip_w(c, c), 1.0)
    np.testing.assert_array_equal(topk_overlap(topk, topk), 1.0)
    np.testing.assert_allclose(kendall_per_unit(scores, scores), 1.0)
    np.testing.assert_allclose(kendall_tau_w(scores, scores), 1.0)
    table = unit_metrics(
        scores_init=scores, scores_final=scores, topk_init=topk, topk_final=topk, emb_init=emb, emb_final=emb
    )
    assert table.column_names == ["unit", *METRIC_COLUMNS]
    assert str(table.schema.field("unit").type) == "int64"
    assert all(str(table.schema.field(c).type) == "double" for c in METRIC_COLUMNS)
    means = layer_means(table)
    assert means["kendall_tau"] == pytest.approx(1.0)
    assert means["clip_delta"] == pytest.approx(0.0, abs=1e-12)
    assert means["topk_overlap"] == 1.0


def test_clip_delta_and_clip_w_by_hand():
    # 3 units, similarities chosen by hand (C^{ii} symmetric, diagonal 1)
    c_ii = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    c_if = np.array([[0.7, 0.3, 0.5], [0.1, 0.9, 0.8], [0.4, 0.2, 1.0]])
    # δ_0 = (1 - 0.7) / ((0.2 + 0.4) / 2) = 1.0; δ_1 = 0.1 / 0.4 = 0.25; δ_2 = 0 / 0.5 = 0
    np.testing.assert_allclose(clip_delta(c_ii, c_if), [1.0, 0.25, 0.0])
    # W_0 = max(0.3, 0.5) / max(0.2, 0.4); W_1 = 0.8 / 0.6; W_2 = 0.4 / 0.6
    np.testing.assert_allclose(clip_w(c_ii, c_if), [1.25, 0.8 / 0.6, 0.4 / 0.6])


def test_kendall_tau_w_by_hand():
    # unit 0's final ranking moved to unit 1; units 1 and 2 are reversed copies of each other
    a0 = np.array([1.0, 2.0, 3.0, 4.0])
    init = np.stack([a0, np.array([1.0, 3.0, 2.0, 4.0]), np.array([4.0, 3.0, 2.0, 1.0])], axis=1)
    final = np.stack([np.array([4.0, 3.0, 1.0, 2.0]), a0, init[:, 2]], axis=1)
    t = _scipy_matrix(init, final)
    t_ii = _scipy_matrix(init, init)
    # unit 0: max(τ(a0, final_1) = 1, τ(a0, final_2) = -1) / max(τ(a0, init_1), τ(a0, init_2))
    assert t[0, 1] == 1.0 and t_ii[0, 1] == pytest.approx(4 / 6)
    want = [
        max(t[j, i] for i in range(3) if i != j) / max(t_ii[j, i] for i in range(3) if i != j)
        for j in range(3)
    ]
    np.testing.assert_allclose(kendall_tau_w(init, final), want)
    assert kendall_tau_w(init, final)[0] == pytest.approx(1.5)
    np.testing.assert_allclose(kendall_tau_w(init, final, units=[2, 0]), [want[2], want[0]])


def test_topk_overlap_by_hand():
    t_init = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    t_final = np.array([[4, 9, 1, 10], [8, 7, 6, 5]])
    np.testing.assert_array_equal(topk_overlap(t_init, t_final), [0.5, 1.0])
    with pytest.raises(ValueError, match="top-k sets"):
        topk_overlap(t_init, t_final[:, :3])


def test_accuracy_and_delta():
    labels = np.array([0, 1, 2, 1])
    assert accuracy(np.array([0, 1, 1, 1]), labels) == 75.0
    logits = np.eye(3)[[0, 1, 2, 0]]
    assert accuracy(logits, labels) == 75.0
    assert delta_acc(init=56.5, final=56.03) == pytest.approx(-0.47)


def test_unit_metrics_rows_for_attacked_units_only():
    rng = np.random.default_rng(4)
    n, j, k, d = 400, 6, 5, 8
    init = rng.random((n, j)).astype(np.float32)
    final = (init + rng.random((n, j))).astype(np.float32)
    t_init = topk_indices(init, np.arange(n), k)
    t_final = topk_indices(final, np.arange(n), k)
    e_init = rng.normal(size=(j, k, d))
    e_final = rng.normal(size=(j, k, d))
    kw = dict(scores_init=init, scores_final=final, topk_init=t_init, topk_final=t_final)
    full = unit_metrics(**kw, emb_init=e_init, emb_final=e_final)
    part = unit_metrics(**kw, emb_init=e_init, emb_final=e_final, units=[4, 1])
    assert part.column("unit").to_pylist() == [4, 1]
    for name in METRIC_COLUMNS:
        np.testing.assert_allclose(part.column(name).to_numpy(), full.column(name).to_numpy()[[4, 1]])
    np.testing.assert_allclose(full.column("kendall_tau").to_numpy(), np.diag(_scipy_matrix(init, final)))
    c_ii = clip_matrix(e_init, e_init)
    c_if = clip_matrix(e_init, e_final)
    np.testing.assert_allclose(full.column("clip_delta").to_numpy(), clip_delta(c_ii, c_if))
    means = layer_means(part)
    assert set(means) == set(METRIC_COLUMNS)
    assert means["clip_w"] == pytest.approx(np.mean(clip_w(c_ii, c_if)[[4, 1]]))
    with pytest.raises(ValueError, match="units must be"):
        unit_metrics(**kw, emb_init=e_init, emb_final=e_final, units=[6])


def test_layer_means_skip_nan_units():
    import pyarrow as pa

    table = pa.table(
        {"unit": pa.array([0, 1], pa.int64()), **{c: pa.array([np.nan, 0.5]) for c in METRIC_COLUMNS}}
    )
    assert layer_means(table) == {c: 0.5 for c in METRIC_COLUMNS}


# --- dead units and decoy_top5 (SCIENCE.md §3 "Dead units", §2 push-up / thesis Fig. H) -------------


def test_dead_units_from_top_scores():
    top = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1e-30, 0.0, 0.0]])
    np.testing.assert_array_equal(dead_units(top), [False, True, False])  # any non-zero score: alive
    with pytest.raises(ValueError, match="squared norms"):
        dead_units(-top)


def test_decoy_in_top_five_by_hand():
    labels = np.array([[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1], [2, 2, 2, 2, 2, 2]])
    np.testing.assert_array_equal(decoy_in_top(labels, 1), [1.0, 1.0, 0.0, 0.0])  # rank 5 is not top-5
    np.testing.assert_array_equal(decoy_in_top(labels, 2, n=1), [0.0, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="k >= 5"):
        decoy_in_top(labels[:, :4], 1)


def test_layer_means_over_units_alive_in_both_states():
    import pyarrow as pa

    # unit 0, 1 alive; 2 dead throughout; 3 killed; 4 revived (dead at the start only)
    cd = [0.5, 0.25, 9.0, 7.0, 5.0]
    table = pa.table({
        "unit": pa.array(range(5), pa.int64()), **{c: pa.array(cd) for c in METRIC_COLUMNS},
        "decoy_top5": pa.array([1.0, 0.0, 1.0, 1.0, 1.0]),
        "dead_init": pa.array([False, False, True, False, True]),
        "dead_final": pa.array([False, False, True, True, False]),
    })  # fmt: skip
    means = layer_means(table)
    assert means == {**{c: 0.375 for c in METRIC_COLUMNS}, "decoy_top5": 0.5, "units_dead_init": 2.0,
                     "units_killed": 1.0}  # fmt: skip
    every_dead = table.set_column(
        table.schema.get_field_index("dead_final"), "dead_final", pa.array([True] * 5)
    )
    assert np.isnan(layer_means(every_dead)["clip_delta"]) and layer_means(every_dead)["units_killed"] == 3.0


def test_unit_metrics_adds_the_state_columns():
    rng = np.random.default_rng(5)
    n, j, k, d = 50, 4, 5, 8
    init, final = rng.random((n, j)), rng.random((n, j))
    t = topk_indices(init, np.arange(n), k)
    e = rng.normal(size=(j, k, d))
    kw = dict(scores_init=init, scores_final=final, topk_init=t, topk_final=t, emb_init=e, emb_final=e)
    dead0, dead1 = np.array([0, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool)
    table = unit_metrics(**kw, units=[3, 2, 1], dead_init=dead0, dead_final=dead1, decoy_top5=np.arange(4.0))
    assert table.column_names == ["unit", *METRIC_COLUMNS, "decoy_top5", "dead_init", "dead_final"]
    assert table.column("dead_final").to_pylist() == [False, True, True]
    assert table.column("decoy_top5").to_pylist() == [3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="dead_init must have one value per unit"):
        unit_metrics(**kw, dead_init=dead0[:3], dead_final=dead1)
