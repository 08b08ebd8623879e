"""``vizsweep ui``: the URL only once the server answers, and no process of its tree left after SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from html import unescape
from pathlib import Path

import pytest

from orchestrator import uiserver
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- /proc, independent of uiserver


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    s = _stat(pid)
    return None if s is None or s[0] == "Z" else s[19]  # field 22: start time; None when gone or a zombie


def _tree(root: int) -> dict[int, str]:
    """pid -> start time of ``root``'s descendants and of every member of their process groups."""
    stats = {int(p): _stat(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    stats = {p: s for p, s in stats.items() if s is not None}
    found, changed = {root}, True
    while changed:
        groups = {int(stats[p][2]) for p in found if p in stats}
        more = {p for p, s in stats.items() if int(s[1]) in found or int(s[2]) in groups}
        changed = not more <= found
        found |= more
    return {p: t for p in found if (t := _start_time(p)) is not None}


def _alive(recorded: dict[int, str]) -> list[int]:
    """The recorded processes still running (same pid and start time: not a reused pid)."""
    return sorted(p for p, t in recorded.items() if _start_time(p) == t)


# --------------------------------------------------------------------------- fast


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_stop_tree_ends_the_group_and_a_descendant_that_left_it():
    script = "sleep 300 & setsid sleep 300 & trap '' TERM; wait"  # the leader ignores SIGTERM
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(uiserver.tree_pids(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        recorded = _tree(proc.pid)
        assert len(recorded) >= 3 and set(uiserver.tree_pids(proc.pid)) == set(recorded)
        assert uiserver.stop_tree(proc, timeout=5) == []
        assert _alive(recorded) == [] and proc.returncode is not None
    finally:
        for p in _alive(_tree(proc.pid)):
            os.kill(p, signal.SIGKILL)


def test_busy_port_is_refused_with_a_way_out():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=r"--port 0"):
            uiserver.pick_port("127.0.0.1", port)
    assert uiserver.pick_port("127.0.0.1", 0) > 0


# --------------------------------------------------------------------------- the command, end to end


def _lines(stream) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _read_until(q: queue.Queue, prefix: str, timeout: float, seen: list[str]) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {prefix!r} line in {timeout} s; output: {''.join(seen)}") from None
        if line is None:
            raise AssertionError(f"vizsweep ui ended before {prefix!r}; output: {''.join(seen)}")
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
        if time.monotonic() > deadline:
            raise AssertionError(f"no {prefix!r} line in {timeout} s; output: {''.join(seen)}")


def _experiment_tags(base: str, experiment_id: str) -> dict[str, str]:
    url = f"{base}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    with urllib.request.urlopen(url, timeout=60) as r:
        return {t["key"]: t["value"] for t in json.loads(r.read())["experiment"].get("tags", [])}


def _landing_page_shows_every_run(url: str, runs: list, tmp_path: Path) -> None:
    """The first page `vizsweep ui` prints, in headless Chromium: every trial is a row of the runs
    table (no click to expand its parent) with its model, layer, attack, CLIP-δ and Kendall-τ."""
    from tests.services import chromium_binary, chromium_dump_dom

    try:
        chromium_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    out = Path(os.environ.get("VIZSWEEP_TEST_ARTIFACTS", tmp_path)) / "mlflow-landing.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    dom = chromium_dump_dom(url, out_png=out)
    out.with_suffix(".html").write_text(dom)
    assert "Model training" in dom  # the runs table, not MLflow 3's GenAI overview
    rows = _grid_rows(dom)
    for name, params, metrics in runs:
        row = next((r for r in rows if name in r), None)
        assert row is not None, f"run {name!r} is not a row of the landing page; rows: {rows}"
        for value in (
            params["model"],
            params["layer"],
            params["attack"],
            *(str(v) for v in metrics.values()),
        ):
            assert value in row, f"{value!r} not shown in {name}'s row: {row!r}"
    assert out.stat().st_size > 10_000


def _grid_rows(dom: str) -> list[str]:
    """The text of each row of the runs table. ag-grid draws a row in two containers (the pinned
    run-name column and the scrolled columns), each with the row's ``row-id``: joined by it."""
    rows: dict[str, str] = {}
    for part in re.split(r"<div(?=[^>]*role=\"row\")", dom)[1:]:
        found = re.search(r'row-id="([^"]+)"', part.split(">", 1)[0])
        text = " ".join(unescape(re.sub(r"<[^>]+>", " ", part.split(">", 1)[1])).split())
        key = found.group(1) if found else f"header-{len(rows)}"
        rows[key] = f"{rows.get(key, '')} {text}".strip()
    return list(rows.values())


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_ui_answers_before_its_url_and_leaves_nothing_after_sigterm(tmp_path):
    from tests.sweep_store import SWEEP, write_sweep

    params = {"model": "alexnet_mini", "layer": "conv5", "attack": "finetune", "seed": 0}
    runs = [("run-a", params, {"train.clip_delta": 0.1234, "train.kendall_tau": 0.8765}),
            ("run-b", {**params, "layer": "conv3", "attack": "push-down"},
             {"train.clip_delta": 0.4321, "train.kendall_tau": 0.5678})]  # fmt: skip
    status = write_sweep(tmp_path / "store", runs)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "orchestrator.cli", "ui", SWEEP, "--store", str(tmp_path / "store"),
           "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    recorded: dict[int, str] = {}
    try:
        q, seen = _lines(proc.stdout), []
        runs_url = _read_until(q, "runs of this sweep:", 300, seen)
        compare = _read_until(q, "compare them:", 10, seen)
        base = f"http://127.0.0.1:{port}"
        assert runs_url.startswith(f"{base}/#/experiments/{status['experiment_id']}/runs?viewStateShareKey=")
        assert compare.startswith(f"{base}/#/compare-runs?runs=")
        with urllib.request.urlopen(runs_url, timeout=60) as r:  # answers at once: no retry here
            assert r.status == 200 and b"<html" in r.read().lower()
        # the shared view's filter is valid MLflow search syntax and finds the sweep's runs (parent + 2)
        key = urllib.parse.unquote(runs_url.split("viewStateShareKey=")[1].split("&")[0])
        view = json.loads(_experiment_tags(base, status["experiment_id"])["mlflow.sharedViewState." + key])
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [status["experiment_id"]], "filter": view["searchFilter"]}).encode(),
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as r:
            assert len(json.loads(r.read())["runs"]) == 3
        _landing_page_shows_every_run(runs_url, runs, tmp_path)
        recorded = _tree(proc.pid)
        assert len(recorded) >= 2, f"no MLflow process under vizsweep ui: {recorded}"
        # MLflow 3's job runner (GenAI jobs: a process and five huey consumers) stays off
        cmds = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode() for p in recorded]
        assert not [c for c in cmds if "huey" in c or "_job_runner" in c], cmds
        proc.send_signal(signal.SIGTERM)  # to vizsweep only: ending its tree is its job
        assert proc.wait(timeout=60) == 0, "".join(seen)
        assert _alive(recorded) == [], f"left running after SIGTERM: {_alive(recorded)} of {sorted(recorded)}"
    finally:
        for p in _alive({**recorded, **_tree(proc.pid)}):
            os.kill(p, signal.SIGKILL)
        proc.wait(timeout=30)
