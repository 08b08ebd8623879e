"""A local server for ``vizsweep ui``: started in its own process group, announced only once it
answers HTTP, and ended as a whole tree on Ctrl-C or SIGTERM.

Why a process group: ``mlflow ui`` started from Python survives its parent's SIGTERM with its
uvicorn workers and huey consumers (17 processes, about 3.4 GB resident; NOTES.md, "MLflow 3
UI"). Its URL is printed only after ``/health`` answers, because the server takes 10-60 s to
come up and a URL that does not load yet reads as a broken command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

START_TIMEOUT_S = 180.0  # healthy after 10-20 s on an idle machine, over a minute on a loaded one
STOP_TIMEOUT_S = 10.0  # per signal: SIGTERM first, then SIGKILL for what is left
POLL_S = 0.25


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: leave the wait and end the process tree."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def connect_host(host: str) -> str:
    """The address a local client reaches a server bound to ``host`` on (a wildcard is not one)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def pick_port(host: str, port: int) -> int:
    """``port`` when nothing listens there (0: any free port); a busy port is the user's to change.

    A health check against a port someone else serves would pass and print a URL of the wrong server.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is not a listener
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(
                f"cannot listen on {host}:{port} ({e.strerror}); another server (an earlier `vizsweep ui`?) "
                f"may hold it: pass --port N, or --port 0 for any free port"
            ) from None
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the process tree


def _procs() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, parent pid, process group) of every process, from /proc."""
    out: dict[int, tuple[str, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:  # ended while we looked
            continue
        fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
        out[int(name)] = (fields[0], int(fields[1]), int(fields[2]))
    return out


def tree_pids(leader: int) -> set[int]:
    """Live processes of the group ``leader`` leads, plus its descendants that left the group.

    Zombies do not count: they hold no memory and no port, and their parent reaps them.
    """
    if not os.path.isdir("/proc"):  # not Linux: the group is all we can see
        try:
            os.killpg(leader, 0)
        except (ProcessLookupError, PermissionError):
            return set()
        return {leader}
    procs = _procs()
    live = {p for p, (state, _, _) in procs.items() if state not in ("Z", "X")}
    children: dict[int, list[int]] = defaultdict(list)
    for p, (_, ppid, _) in procs.items():
        children[ppid].append(p)
    found = {p for p in live if procs[p][2] == leader}
    stack = [leader]
    while stack:
        for c in children[stack.pop()]:
            if c not in found:
                found.add(c)
                stack.append(c)
    return (found | {leader}) & live


def _signal_tree(leader: int, pids: set[int], sig: int) -> None:
    try:
        os.killpg(leader, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tree(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM the tree of ``proc`` (started with ``start_new_session``), SIGKILL what outlives
    ``timeout``; returns the pids still alive after both (empty when all ended)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = tree_pids(proc.pid)
        if not pids:
            break
        _signal_tree(proc.pid, pids, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or it stays a zombie we would wait on
            if not tree_pids(proc.pid):
                break
            time.sleep(0.05)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    return sorted(tree_pids(proc.pid))


# --------------------------------------------------------------------------- serving


def _tail(path: str, chars: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError as e:
        return f"(no log: {e})"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:  # refused, reset or timed out: not up yet
        return False


def wait_ready(proc: subprocess.Popen, health_url: str, timeout: float, log_path: str) -> None:
    """Poll ``health_url`` until it answers 200; raise at once when the server exits, or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with code {proc.returncode} before answering; "
                f"its log ({log_path}) ends with:\n{_tail(log_path)}"
            )
        if _answers(health_url):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the server did not answer {health_url} within {timeout:.0f} s; "
                f"its log ({log_path}) ends with:\n{_tail(log_path)}"
            )
        time.sleep(POLL_S)


def server_env() -> dict[str, str]:
    """The environment of an MLflow server we start: MLflow 3's job runner off unless asked for.

    That runner (GenAI jobs, which vizsweep never submits) is a job process and five huey consumers,
    each importing MLflow: a server's start took 24 CPU-seconds (16 s) on 2 cores with it, 11 (11.5 s)
    without. A user who wants it sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true.
    """
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def serve(
    cmd: Sequence[str],
    health_url: str,
    announce: Callable[[], None],
    timeout: float = START_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``cmd`` until it exits, SIGINT or SIGTERM; ``announce`` once it answers; end its whole tree.

    Returns the server's exit code, or 0 when a signal stopped it. The server's output goes to a
    log file, shown (and kept) only when it fails.
    """
    old = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    fd, log_path = tempfile.mkstemp(prefix="vizsweep-ui-", suffix=".log")
    proc: subprocess.Popen | None = None
    ok = False
    try:
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=None if env is None else dict(env),
            )  # fmt: skip
        wait_ready(proc, health_url, timeout, log_path)
        announce()
        code = proc.wait()
        ok = code == 0
        if not ok:
            print(f"the server exited with code {code}; its log ({log_path}) ends with:\n{_tail(log_path)}",
                  file=sys.stderr)  # fmt: skip
        return code
    except _Stop:
        ok = True
        return 0
    finally:
        for s in old:  # a second Ctrl-C must not cut the cleanup short (it is bounded by STOP_TIMEOUT_S)
            signal.signal(s, signal.SIG_IGN)
        if proc is not None:
            left = stop_tree(proc)
            if left:
                print(f"vizsweep: processes {left} did not end; kill them by hand", file=sys.stderr)
        for s, h in old.items():
            signal.signal(s, h)
        if ok:
            os.unlink(log_path)
