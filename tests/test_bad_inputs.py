"""Nothing bad gets past ``vizsweep validate``: hostile specs and options exit 2, named, before Ray.

Table-driven: each case edits a base spec (the quickstart with its ``synth:`` block, the
quickstart or saliency example on a tiny real dataset, made once per module) and must be
refused with exit code 2, its field (and YAML line) or file named, no traceback, Ray never
started. The classes test_spec.py covers on the quickstart are not repeated; these are the
dataset's real sizes, strict URIs, the tracking server, the weights file, long values, sweep
names and the CLI's numeric options.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from orchestrator.cli import main
from shared.models import model_info, save_checkpoint
from shared.synth import generate
from tests.test_spec import DROP, EXAMPLE, problem_lines, quickstart, workdir, write_case  # noqa: F401

SALIENCY = EXAMPLE.parent / "saliency.yaml"
MB = "x" * 1_000_000
SECRET = "s3cr3tValue"


CALLED: list[str] = []


def _record(what: str) -> None:
    CALLED.append(what)


class _Payload:
    """A pickle that would call a function when loaded (one that only records it): refused, never run."""

    def __reduce__(self):
        return (_record, ("payload ran",))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Any]:
    """A tiny dataset (4 classes, 24 train / 12 val images), one with an empty class, bad weights files,
    a port that refuses connections and a socket that accepts and never answers."""
    root = tmp_path_factory.mktemp("bad-inputs")
    ds = root / "tiny"
    generate(str(ds), classes=4, train_per_class=6, val_per_class=3, size=16, seed=0)
    holey = root / "holey"  # class 1 has no train images (as its manifest says)
    shutil.copytree(ds, holey)
    manifest = json.loads((holey / "_MANIFEST.json").read_text())
    manifest["splits"]["train"]["per_class"] = {"0": 6, "1": 0, "2": 6, "3": 6}
    (holey / "_MANIFEST.json").write_text(json.dumps(manifest))
    files = {"random": root / "random.pt", "pickle": root / "payload.pt", "empty": root / "empty.pt"}
    files["random"].write_bytes(bytes(range(256)) * 16)
    files["pickle"].write_bytes(pickle.dumps(_Payload()))
    files["empty"].write_bytes(b"")
    files["linear"] = root / "linear.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), files["linear"])
    info = model_info("alexnet_mini")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in info.builder(4).state_dict().items()}
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    state["features.0.weight"] = torch.zeros(7, 3, 3, 3)
    files["shapes"] = root / "shapes.pt"
    torch.save(state, files["shapes"])
    files["vgg"] = root / "vgg.pt"
    save_checkpoint(model_info("vgg_mini").builder(4), "vgg_mini", str(files["vgg"]))
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    free_port = refused.getsockname()[1]
    refused.close()  # nothing listens there now: connection refused at once
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nobody ever answers
    yield {"ds": str(ds), "holey": str(holey), "files": {k: str(v) for k, v in files.items()},
           "refused": f"http://127.0.0.1:{free_port}", "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
           "dir": str(root)}  # fmt: skip
    silent.close()


def base(kind: str, env: dict[str, Any]) -> dict[str, Any]:
    """q: the quickstart (synth:); t: the quickstart on the tiny dataset; s: saliency on it; h: the holey one."""
    if kind == "q":
        return quickstart()
    doc = yaml.safe_load((SALIENCY if kind == "s" else EXAMPLE).read_text())
    doc["dataset"] = {"uri": env["holey" if kind == "h" else "ds"]}
    if kind != "s":
        doc["attacks"][2] |= {"decoy_images": 2, "decoy_class": 2}  # the holey set's class 1 has no images
    return doc


def apply(doc: dict[str, Any], edits: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """test_spec's ``edited`` on any base; "{ds}" / "{refused}" / "{file:random}" in values are filled in."""
    doc = copy.deepcopy(doc)
    for path, value in edits.items():
        if isinstance(value, str) and "{" in value and len(value) < 100:
            value = re.sub(r"\{file:(\w+)\}", lambda m: env["files"][m.group(1)], value).format(**env)
        *parents, last = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
        node = doc
        for key in parents:
            node = node[key]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return doc


# (id, base, edits, field named in the message, hint in the same problem line, also refused by --spec-only)
CASES = [
    # 1. values against the dataset's real sizes (a manifest, or the synth block before the data exists)
    ("k-over-train", "t", {"attacks[1].k": 25}, "attacks[1].k", "has 24 images, fewer than k", False),
    ("k-over-train-synth", "q", {"attacks[1].k": 4801}, "attacks[1].k", "has 4,800 images", True),
    ("metrics-k-over-val", "t", {"metrics.k": 13}, "metrics.k", "split 'val' has 12 images", False),
    ("metrics-k-synth", "q", {"metrics.k": 801}, "metrics.k", "split 'val' has 800 images", True),
    (
        "units-out-of-layer", "t", {"attacks[1].scope": "unit", "attacks[1].units": [3, 999]},
        "attacks[1].units", "[999]: layer 'conv5' of 'alexnet_mini' (models[0]) has 64 units", True,
    ),
    (
        "units-torchvision-alexnet", "q",
        {"models[0]": {"name": "alexnet", "weights": "IMAGENET1K_V1"}, "attacks[1].scope": "unit",
         "attacks[1].units": [256]},
        "attacks[1].units", "layer 'conv5' of 'alexnet' (models[0]) has 256 units, indices 0..255", True,
    ),
    ("decoy-not-a-class", "t", {"attacks[2].decoy_class": 4}, "attacks[2].decoy_class", "classes 0..3", False),
    ("decoy-no-images", "h", {"attacks[2].decoy_class": 1}, "attacks[2].decoy_class", "class 1 has no images", False),
    (
        "collage-class-missing", "s",
        {"attacks[1]": {"name": "fool-active", "classes": [1, 9], "lambda": 1.0}},
        "attacks[1].classes", "[1, 9]: the dataset has classes 0..3", False,
    ),
    ("eval-images-absurd", "t", {"training.eval_images": 10**9}, "training.eval_images", "<= 10000000", True),
    ("eval-images-1e9", "q", {"training.eval_images": 1e9}, "training.eval_images", "expected an integer", True),
    ("test-images-absurd", "s", {"attacks[1].test_images": 10**9}, "attacks[1].test_images", "<= 10000000", True),
    ("tau-images-absurd", "q", {"metrics.tau_images": 10**9}, "metrics.tau_images", "<= 10000000", True),
    ("picture-unit-out-of-layer", "q", {"metrics.picture_units": [3, 100]}, "metrics.picture_units",
     "units [100] are not in layer conv5 of alexnet_mini (64 units: 0..63)", True),
    ("picture-units-repeated", "q", {"metrics.picture_units": [3, 3]}, "metrics.picture_units", "distinct", True),
    ("decoy-images-absurd", "q", {"attacks[2].decoy_images": 10**9}, "attacks[2].decoy_images", "<= 10000000", True),
    # 2. URIs parsed strictly
    ("store-s3-no-bucket", "q", {"store": "s3://"}, "store", "has no bucket; write s3://bucket/prefix", True),
    ("store-s3-empty-bucket", "q", {"store": "s3:///x"}, "store", "'s3:///x' has no bucket", True),
    ("store-s3-one-slash", "q", {"store": "s3:/bucket/x"}, "store", "has one slash after 's3:'", True),
    ("store-s3-credentials", "q", {"store": f"s3://AKIA:{SECRET}@host/x"}, "store", "never in the URI", True),
    ("store-s3-bad-bucket", "q", {"store": "s3://my bucket/x"}, "store", "bad bucket name 'my bucket'", True),
    ("store-s3-empty-segment", "q", {"store": "s3://b//x"}, "store", "empty path segment", True),
    ("store-file-host", "q", {"store": "file://otherhost/x"}, "store", "names host 'otherhost'", True),
    ("store-white-space", "q", {"store": " ./store"}, "store", "white space", True),
    ("dataset-s3-no-bucket", "q", {"dataset.uri": "s3://"}, "dataset.uri", "has no bucket", True),
    ("dataset-hdfs", "q", {"dataset.uri": "hdfs://nn/x"}, "dataset.uri", "unsupported URI scheme 'hdfs'", True),
    ("weights-s3-no-bucket", "q", {"models[0].weights": "s3:///m.pt"}, "models[0].weights", "no bucket", True),
    # 3. the tracking server
    ("tracking-scheme", "q", {"tracking_uri": "bogus://x"}, "tracking_uri", "MLflow accepts file, sqlite", True),
    ("tracking-s3", "q", {"tracking_uri": "s3://b/mlruns"}, "tracking_uri", "unknown tracking URI scheme 's3'", True),
    ("tracking-no-host", "q", {"tracking_uri": "http://"}, "tracking_uri", "names no host", True),
    ("tracking-refused", "q", {"tracking_uri": "{refused}"}, "tracking_uri", "did not answer", False),
    ("tracking-silent", "q", {"tracking_uri": "{silent}"}, "tracking_uri", "did not answer", False),
    # 4. the weights file, opened safely and checked against the model built on the meta device
    ("weights-random-bytes", "t", {"models[0].weights": "{file:random}"}, "models[0].weights", "random.pt", False),
    ("weights-pickle", "t", {"models[0].weights": "{file:pickle}"}, "models[0].weights", "could run code", False),
    ("weights-empty", "t", {"models[0].weights": "{file:empty}"}, "models[0].weights", "empty.pt safely", False),
    (
        "weights-other-arch", "t", {"models[0].weights": "{file:linear}"}, "models[0].weights",
        "missing keys: features.0.weight", False,
    ),
    (
        "weights-shapes", "t", {"models[0].weights": "{file:shapes}"}, "models[0].weights",
        "shape mismatches: features.0.weight (7, 3, 3, 3) != (", False,
    ),
    ("weights-other-model", "t", {"models[0].weights": "{file:vgg}"}, "models[0].weights", "holds model 'vgg_mini'", False),
    ("weights-a-folder", "t", {"models[0].weights": "{dir}"}, "models[0].weights", "expected a file", False),
    # 6. long values: cut, echoed once
    ("long-name", "q", {"name": MB}, "name", "… (1,000,000 chars)", True),
    ("long-model", "q", {"models[0].name": MB}, "models[0].name", "… (1,000,000 chars)", True),
    ("long-store", "q", {"store": "zz://" + MB}, "store", "… (1,000,005 chars)", True),
    ("long-key", "q", {MB: 1}, "xxxxxxxx", "… (1,000,000 chars)", True),
    # 7. sweep names
    ("name-dotdot", "q", {"name": "a..b"}, "name", "hold no '..'", True),
    ("name-leading-dot", "q", {"name": ".hidden"}, "name", "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", True),
    ("name-too-long", "q", {"name": "a" * 65}, "name", "at most 64", True),
    ("name-slash", "q", {"name": "a/b"}, "name", "not a safe sweep name", True),
    # classes test_spec.py checks on the quickstart, here on the saliency family and a real dataset
    ("saliency-interpreter", "s", {"attacks[1].interpreter": "gradcamm"}, "attacks[1].interpreter", "gradcam", True),
    ("saliency-layer", "s", {"attacks[1].layer": "conv99"}, "attacks[1].layer", "unknown layer 'conv99'", True),
    ("saliency-attack", "s", {"attacks[1].name": "fool-locaton"}, "attacks[1].name", "fool-location", True),
    ("split-missing", "t", {"dataset.val_split": "test"}, "dataset.val_split", "test", False),
]  # fmt: skip


RAY_INITS: list = []  # ray.init calls during the current test (a session's own Ray may already run)


@pytest.fixture(autouse=True)
def _count_ray_inits(monkeypatch):
    """Record every ``ray.init``: other modules' session fixtures may have started Ray before this test,
    so "Ray not started" means no call here, not ``ray.is_initialized()``."""
    import ray

    RAY_INITS.clear()
    monkeypatch.setattr(ray, "init", lambda *a, **k: RAY_INITS.append((a, k)))
    yield
    RAY_INITS.clear()


def _ray_started() -> bool:
    return bool(RAY_INITS)


@pytest.fixture
def validate(workdir, env, capsys, monkeypatch):  # noqa: F811 (test_spec's fixture)
    """Run ``vizsweep validate`` in-process on an edited base; (exit code, stderr, stdout)."""
    monkeypatch.setenv("VIZSWEEP_TRACKING_TIMEOUT", "0.5")

    def run(kind: str, edits: dict[str, Any], *flags: str) -> tuple[int, str, str]:
        path = write_case(workdir, apply(base(kind, env), edits, env))
        code = main(["validate", *flags, str(path)])
        out = capsys.readouterr()
        return code, out.err, out.out

    return run


@pytest.mark.parametrize(("kind", "edits", "field", "hint", "file_level"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_input_exits_2_naming_the_field_before_ray(validate, kind, edits, field, hint, file_level):
    for flags in (["--spec-only"], []) if file_level else ([],):
        code, err, out = validate(kind, edits, *flags)
        assert code == 2 and not out, (flags, err)
        assert problem_lines(err, field, hint), (flags, err[:3000])
        line = next(x for x in err.splitlines() if x.startswith(f"  - {field}"))
        assert re.search(r" \(line \d+\): ", line), line  # the YAML line is named
        assert "Traceback" not in err and SECRET not in err
        assert len(err) < 4000, "a long value is echoed once, cut"
        assert not _ray_started()


def test_the_bases_are_valid(validate, env):
    """Each case fails for its edit alone: the bases themselves validate."""
    for kind in ("q", "t", "s", "h"):
        code, err, out = validate(kind, {})
        assert code == 0 and out.startswith("ok: "), err


def test_a_server_that_answers_passes_the_tracking_check(validate):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    Thread(target=server.handle_request, daemon=True).start()
    try:
        code, err, _ = validate("q", {"tracking_uri": f"http://127.0.0.1:{server.server_port}"})
    finally:
        server.server_close()
    assert code == 0, err


def test_a_spec_only_check_does_not_probe_the_server(validate):
    code, err, out = validate("q", {"tracking_uri": "{refused}"}, "--spec-only")
    assert code == 0 and out.startswith("ok (file checks only)"), err


def test_a_pickle_payload_is_never_run(validate):
    code, err, _ = validate("t", {"models[0].weights": "{file:pickle}"})
    assert code == 2 and "refused" in err and not CALLED, err


CLI = [
    (["activations", "--data", "d", "--weights", "w", "--batch-size", "0"], "--batch-size", "valid: >= 1"),
    (["activations", "--data", "d", "--weights", "w", "--k", "-1"], "--k", "valid: >= 0"),
    (["activations", "--data", "d", "--weights", "w", "--batch-size", "many"], "--batch-size", "expected an integer"),
    (["pretrain", "--data", "d", "--epochs", "-3"], "--epochs", "valid: >= 1"),
    (["pretrain", "--data", "d", "--seed", "-1"], "--seed", "valid: >= 0"),
    (["data", "synth", "--out", "o", "--classes", "0"], "--classes", "valid: >= 1"),
    (["data", "synth", "--out", "o", "--size", "8"], "--size", "valid: >= 16"),
    (["data", "synth", "--out", "o", "--val-per-class", "0"], "--val-per-class", "valid: >= 1"),
    (["data", "import-imagenet", "a", "b", "--shard-size", "0"], "--shard-size", "valid: >= 1"),
    (["launch", "x.yaml", "--max-concurrent", "0"], "--max-concurrent", "valid: >= 1"),
    (["resume", "x", "--max-concurrent", "-2"], "--max-concurrent", "valid: >= 1"),
    (["ui", "x", "--port", "70000"], "--port", "valid: 0..65535"),
    (["plan", "x.yaml", "--val-images", "-5"], "--val-images", "valid: >= 1"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "option", "valid"), CLI, ids=[" ".join(c[0][-2:]) for c in CLI])
def test_cli_numbers_out_of_range_are_argparse_errors(capsys, argv, option, valid):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"error: argument {option}: " in err and valid in err and "Traceback" not in err
    assert not _ray_started()


def test_help_and_a_syntax_error_import_no_heavy_module(tmp_path):
    """`vizsweep --help` and a YAML syntax error answer without torch, pyarrow, ray or mlflow."""
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlayers: [conv3\n")
    script = (
        "import sys, contextlib, io; from orchestrator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        f"code = main(['validate', {str(bad)!r}])\n"
        "heavy = [m for m in ('torch', 'pyarrow', 'ray', 'mlflow', 'pydantic') if m in sys.modules]\n"
        "print('result', code, heavy)\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "result 2 []" in proc.stdout, proc.stdout + proc.stderr
    assert "YAML syntax error at line" in proc.stderr
