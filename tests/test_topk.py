"""Streaming top-k equals a full sort, whatever the batch order; ties go to the smaller image id."""

from __future__ import annotations

import numpy as np

from shared.topk import StreamingTopK


def _full_sort(scores, ids, k):
    out = []
    for j in range(scores.shape[1]):
        order = sorted(range(len(ids)), key=lambda i: (-scores[i, j], ids[i]))[:k]
        out.append([ids[i] for i in order])
    return out


def test_streaming_equals_full_sort_with_ties():
    rng = np.random.default_rng(0)
    n, j, k = 1000, 7, 10
    scores = rng.integers(0, 20, size=(n, j)).astype(np.float32)  # many ties
    ids = np.array([f"img-{i:05d}" for i in rng.permutation(n)])
    labels = rng.integers(0, 5, n)
    expected = _full_sort(scores, list(ids), k)
    for batch in (1, 13, 256, n):
        acc = StreamingTopK(j, k)
        perm = rng.permutation(n)
        for s in range(0, n, batch):
            idx = perm[s : s + batch]
            acc.update(scores[idx], ids[idx], labels[idx])
        got = [[str(x) for x in acc.ids[:, u]] for u in range(j)]
        assert got == expected, f"batch size {batch}"
        t = acc.table()
        assert t.num_rows == j * k
        assert t.column("rank").to_pylist()[:k] == list(range(k))
    assert acc.seen == n


def test_fewer_images_than_k():
    acc = StreamingTopK(2, 5)
    acc.update(np.array([[1.0, 2.0], [3.0, 0.5]]), np.array(["b", "a"]), np.array([0, 1]))
    assert acc.table().num_rows == 4
    assert list(acc.ids[:, 0]) == ["a", "b"]
