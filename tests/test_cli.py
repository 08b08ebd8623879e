"""The command line: clear errors with exit code 2, and the data commands end to end."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main


def test_synth_and_index(tmp_path, capsys):
    out = tmp_path / "d"
    rc = main(["data", "synth", "--out", str(out), "--classes", "16", "--train-per-class", "2",
               "--val-per-class", "2", "--size", "32"])  # fmt: skip
    assert rc == 0
    assert (out / "parquet" / "val").is_dir() and (out / "webdataset" / "train").is_dir()
    assert len(json.loads((out / "classes.json").read_text())) == 16
    assert main(["data", "index", str(out), "--split", "val"]) == 0
    assert "_index" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "synth", "--out", "{tmp}/x", "--classes", "999"], "classes=999"),
        (["data", "index", "{tmp}/missing"], "missing"),
        (["activations", "--data", "{tmp}/missing", "--weights", "{tmp}/w.pt", "--layers", "conv9"], "conv9"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, monkeypatch, argv, message):
    import jobs.raysetup

    started: list[bool] = []
    real = jobs.raysetup.ensure_ray
    # Ray may already be up from another test in this process: record whether *this* call asks for it.
    monkeypatch.setattr(jobs.raysetup, "ensure_ray", lambda *a, **k: (started.append(True), real(*a, **k))[1])
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert not started, "bad input must be rejected before Ray starts"
