"""A damaged committed table is found by `vizsweep verify`, named when read, and recomputed by the next run."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.activations import read_table, run_activations
from orchestrator.cli import main
from shared import integrity, store
from tests.test_activations import _spec, setup  # noqa: F401  (the tiny dataset, model and weights)

pytestmark = pytest.mark.slow


def _part(table_dir: str) -> tuple[str, dict]:
    m = store.read_manifest(table_dir)
    return store.local_path(store.join(table_dir, m["files"][0])), m


def test_a_truncated_part_is_reported_then_recomputed_with_the_same_key(setup, ray_local, tmp_path, capsys):  # noqa: F811
    store_uri = str(tmp_path / "store")
    first = run_activations(_spec(setup), store_uri)
    conv5 = first.tables["conv5"]
    ids0, labels0, scores0 = read_table(conv5)
    path, m0 = _part(conv5)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])

    capsys.readouterr()
    assert main(["verify", "--store", store_uri, "--quick"]) == 1
    out = capsys.readouterr().out
    name = path.rsplit("/", 1)[-1]
    assert f"corrupt activation table: {conv5}" in out
    assert f"{name}: {len(data) // 2} bytes, the manifest records {len(data)}" in out
    assert "would be recomputed" in out and "1 corrupt" in out

    again = run_activations(_spec(setup), store_uri)  # conv3 is reused, conv5 computed again
    assert not again.skipped and again.rows == 96
    m1 = store.read_manifest(conv5)
    assert m1["key"] == m0["key"] and m1["rows"] == 96 and m1["created_at"] > m0["created_at"]
    assert name not in m1["files"] and not store.exists(store.join(conv5, name))  # old parts went first
    ids1, labels1, scores1 = read_table(conv5)
    order0, order1 = np.argsort(ids0), np.argsort(ids1)
    assert list(ids1[order1]) == list(ids0[order0]) and list(labels1[order1]) == list(labels0[order0])
    np.testing.assert_allclose(scores1[order1], scores0[order0], rtol=1e-6)
    assert main(["verify", "--store", store_uri]) == 0
    assert "all intact" in capsys.readouterr().out

    # same size, other bytes (the footer's magic): only the checksum tells; the read names the file
    path, _ = _part(conv5)
    with open(path, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"XXXX")
    assert main(["verify", "--store", store_uri, "--quick"]) == 0
    assert main(["verify", "--store", store_uri]) == 1
    assert "checksum differs" in capsys.readouterr().out
    integrity._verified.clear()  # as in a new process: the first read of the table hashes it
    with pytest.raises(integrity.CorruptStage, match=rf"{path.rsplit('/', 1)[-1]}.*next launch or resume"):
        read_table(conv5)
    assert not store.is_done(conv5)  # removed: the next run computes it again
    assert run_activations(_spec(setup), store_uri).rows == 96
