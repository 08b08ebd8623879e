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


# --------------------------------------------------------------------------- a CLI that helps


def _parsers(parser=None, path=()):
    """(command path, parser) for the top-level parser and every subcommand, nested ones included."""
    import argparse

    from orchestrator.cli import build_parser

    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_argument_has_help_and_defaults_show():
    import argparse

    for path, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            where = f"vizsweep {' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{where}: no help"
        text = parser.format_help()
        assert "`" not in text, f"vizsweep {' '.join(path)}: backticks in help:\n{text}"
        for action in parser._actions:
            shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
            if shown and action.default is not True:
                squeezed = "".join(f"default: {action.default}".split())  # help wraps at hyphens too
                assert squeezed in "".join(text.split()), (path, action.dest)


def test_version(capsys):
    from orchestrator.cli import package_version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"vizsweep {package_version()}"
    assert package_version().count(".") >= 1


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["lanch"], "did you mean 'launch'?"),
        (["stauts"], "did you mean 'status'?"),
        (["data", "synt"], "did you mean 'synth'?"),
        (["report", "x", "--format", "mdd"], "did you mean 'md'?"),
        (["xyzzy"], None),
    ],
)
def test_mistyped_choice_gets_a_suggestion(capsys, argv, suggestion):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice" in err
    assert (suggestion in err) if suggestion else ("did you mean" not in err)


@pytest.mark.parametrize("cmd", ["report", "ui", "resume", "stop"])
def test_missing_sweep_id_points_to_status(tmp_path, capsys, cmd):
    assert main([cmd, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs a sweep id" in err and "vizsweep status" in err and str(tmp_path) in err


@pytest.mark.parametrize(
    ("flag", "env", "said"),
    [
        (True, False, "(from --store)"),
        (True, True, "(from --store)"),
        (False, True, "(from $VIZSWEEP_STORE)"),
        (False, False, "(the default; set $VIZSWEEP_STORE"),
    ],
)
@pytest.mark.parametrize(
    ("argv", "stream"),
    [(["status"], "out"), (["report", "nope"], "out"), (["report", "nope", "--format", "json"], "err")],
)
def test_store_is_found_and_said_once(tmp_path, capsys, monkeypatch, flag, env, said, argv, stream):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIZSWEEP_STORE", raising=False)
    if env:
        monkeypatch.setenv("VIZSWEEP_STORE", str(tmp_path / "from-env"))
    store = tmp_path / ("from-flag" if flag else "from-env" if env else "vizsweep-store")
    main([*argv, *(["--store", str(tmp_path / "from-flag")] if flag else [])])
    captured = capsys.readouterr()
    text = captured.out if stream == "out" else captured.err
    lines = [line for line in (captured.out + captured.err).splitlines() if line.startswith("store:")]
    assert len(lines) == 1 and lines[0] in text.splitlines(), (captured.out, captured.err)
    assert said in lines[0] and (store.name in lines[0])
    if argv[0] == "report":  # the search, too, went to that store
        assert "no sweep 'nope' in store" in captured.err and store.name in captured.err


@pytest.mark.parametrize("argv", [["validate", "{p}"], ["validate", "{p}", "--spec-only"], ["launch", "{p}"],
                                  ["plan", "{p}"], ["demo", "--spec", "{p}"]])  # fmt: skip
def test_missing_spec_file_is_a_missing_file(tmp_path, capsys, argv):
    path = str(tmp_path / "nope.yaml")
    assert main([a.replace("{p}", path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"no such file: {path}" in err and "sweep spec" not in err and "Traceback" not in err
