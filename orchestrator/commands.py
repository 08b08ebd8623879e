"""The sweep commands: launch, status, resume, report, ui (``vizsweep --help``)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from shared import store

STORE_ENV = "VIZSWEEP_STORE"
DEFAULT_STORE = "vizsweep-store"


def resolve_store(explicit: str | None = None, given_as: str = "--store") -> tuple[str, str]:
    """The store to use and where it came from: ``explicit``, else ``$VIZSWEEP_STORE``, else
    ``./vizsweep-store`` (read at call time, so a notebook may set the variable after import)."""
    if explicit:
        return explicit, f"from {given_as}"
    env = os.environ.get(STORE_ENV)
    if env:
        return env, f"from ${STORE_ENV}"
    return DEFAULT_STORE, f"the default; set ${STORE_ENV} or pass --store to use another"


def store_line(uri: str, source: str) -> str:
    """The one line that says which store a command reads, and why that one."""
    return f"store: {_shown_store(uri)} ({source})"


def require_file(path: str | os.PathLike) -> None:
    """A spec named by a local path must exist: a missing file is a missing file, not a bad spec."""
    try:
        local = store.local_path(os.fspath(path))
    except store.StoreError:  # an unsupported scheme: load_spec says which ones work
        return
    if local is not None and not os.path.exists(local):
        raise FileNotFoundError(f"no such file: {os.fspath(path)}")


class SweepNotFound(ValueError):
    """The sweep id names no folder under ``{store}/sweeps``."""


def list_sweeps(store_uri: str) -> list[dict[str, Any]]:
    """Status records of the store's sweeps, newest first."""
    root = store.join(store_uri, "sweeps")
    if not store.exists(root):
        return []
    out = []
    for f in store.listdir(root, recursive=True):
        if f.endswith("/status.json") and f.count("/") == store.normalize(root).count("/") + 2:
            out.append({"dir": f.rsplit("/", 1)[0], **store.read_json(f)})
    return sorted(out, key=lambda s: s.get("started", 0), reverse=True)


def find_sweep(store_uri: str, sweep_id: str) -> str:
    from orchestrator.status import sweep_dir

    d = sweep_dir(store_uri, sweep_id)
    if not store.exists(store.join(d, "spec.json")):
        known = [s.get("sweep_id", "?") for s in list_sweeps(store_uri)]
        raise SweepNotFound(
            f"no sweep {sweep_id!r} in store {store.normalize(store_uri)}; "
            f"known: {', '.join(known) or 'none'} (pass --store or set VIZSWEEP_STORE to look elsewhere)"
        )
    return d


def cmd_launch(spec_path: str, max_concurrent: int | None = None) -> int:
    from orchestrator.spec import load_spec

    require_file(spec_path)
    spec = load_spec(spec_path, check_environment=True)  # bad input stops here, before Ray starts
    return _run(spec, max_concurrent)


def cmd_resume(store_uri: str, sweep_id: str, max_concurrent: int | None = None) -> int:
    from orchestrator.spec import load_spec

    d = find_sweep(store_uri, sweep_id)
    spec = load_spec(store.read_json(store.join(d, "spec.json")), check_environment=True)
    _refuse_if_driver_alive(d)
    return _run(spec, max_concurrent)


def _run(spec, max_concurrent: int | None) -> int:
    from orchestrator.report import render, report_rows
    from orchestrator.sweep import launch

    res = launch(spec, max_concurrent=max_concurrent)
    rows = report_rows(res.tracking_uri, res.sweep_id)
    print(render(rows, "md", sweep=res.sweep_id))
    _print_pruning(spec.store, res.sweep_id, res.tracking_uri, rows)
    print(
        f"\nsweep {res.sweep_id}: {res.trials} trials, {res.trained} run now, {res.reused} reused from the store, "
        f"{len(res.failed)} failed, {len(res.stopped)} stopped by the α controller, {res.seconds:.0f} s"
    )
    if res.failed:
        print(f"failed: {', '.join(res.failed)}; finish them with: vizsweep resume {res.sweep_id}")
    from orchestrator.status import sweep_dir

    if (
        store.read_json(store.join(sweep_dir(spec.store, res.sweep_id), "status.json")).get("state")
        == "stopped"
    ):
        print(f"stopped on request (vizsweep stop); continue with: vizsweep resume {res.sweep_id}")
    print(f"compare the runs in MLflow: vizsweep ui {res.sweep_id} --store {_shown_store(spec.store)}")
    return 1 if res.failed else 0


def _print_pruning(store_uri: str, sweep_id: str, tracking_uri: str, rows: list[dict]) -> None:
    from orchestrator.report_pruning import pruning_tables

    tables = pruning_tables(rows)
    if tables:
        print(tables)
    for path in report_figures(store_uri, sweep_id, tracking_uri, rows, tables):
        print(f"{'table' if path.endswith('.md') else 'figure'}: {path}")


def report_figures(
    store_uri: str, sweep_id: str, tracking_uri: str, rows: list[dict], tables: str
) -> list[str]:
    """The pruning tables (4.1–4.4, C–F) and figures (Figs. 4.1–4.4) in the sweep's folder, also
    logged to its parent run; nothing when the sweep pruned nothing."""
    import tempfile

    from orchestrator.report_plots import pruning_plots
    from orchestrator.tracking import client, find_parent_run

    with tempfile.TemporaryDirectory() as tmp:
        paths = pruning_plots(rows, tmp)
        if tables:
            paths.append(os.path.join(tmp, "pruning_tables.md"))
            with open(paths[-1], "w") as f:
                f.write(tables)
        out = []
        parent = find_parent_run(tracking_uri, sweep_id) if paths else None
        for p in paths:
            dest = store.join(store_uri, "sweeps", sweep_id, "report", os.path.basename(p))
            with open(p, "rb") as f:
                store.write_bytes(dest, f.read())
            if parent is not None:
                client(tracking_uri).log_artifact(parent.info.run_id, p)
            out.append(store.local_path(dest) or dest)
    return out


def _shown_store(uri: str) -> str:
    local = store.local_path(uri)
    if local is None:
        return uri
    rel = os.path.relpath(local)
    return rel if not rel.startswith("..") else local


def _refuse_if_driver_alive(sweep_dir_uri: str) -> None:
    """A resume while the sweep's own driver still runs would run its trials twice."""
    status = store.read_json(store.join(sweep_dir_uri, "status.json"))
    pid = status.get("driver_pid")
    if pid and pid != os.getpid() and _alive(pid) and status.get("state") not in ("done", "failed"):
        raise ValueError(
            f"sweep {status.get('sweep_id')} is still being run by process {pid}; stop it first or wait"
        )


def _alive(pid: int) -> bool:
    if pid <= 0:  # no pid recorded; os.kill(-1, 0) would ask about every process we may signal
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie or a reused pid of another program is not our driver
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        return b"vizsweep" in cmdline or b"orchestrator" in cmdline or b"python" in cmdline
    except OSError:
        return True


def cmd_status(store_uri: str, sweep_id: str | None) -> int:
    """The store's sweeps, or one sweep's trials; reads JSON files only (no torch, Ray or MLflow)."""
    if sweep_id is None:
        sweeps = list_sweeps(store_uri)
        if not sweeps:
            print(f"no sweeps in {store.normalize(store_uri)}")
            return 0
        print(f"{'sweep':<32} {'state':<10} {'trials':>6} {'done':>5} {'failed':>6}  started")
        for s in sweeps:
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.get("started", 0)))
            print(f"{s.get('sweep_id', '?'):<32} {s.get('state', '?'):<10} {s.get('trials', '?'):>6} "
                  f"{s.get('done', 0):>5} {s.get('failed_count', 0):>6}  {started}")  # fmt: skip
            if s.get("state") == "failed" and s.get("reason"):
                print(f"  why: {s['reason']}")
        return 0
    from orchestrator.status import STATES, trial_rows

    d = find_sweep(store_uri, sweep_id)
    status = store.read_json(store.join(d, "status.json"))
    plan_uri = store.join(d, "plan.json")
    plans = store.read_json(plan_uri) if store.exists(plan_uri) else []  # plain dicts: no plugin imports
    driver_alive = _alive(status.get("driver_pid") or -1)
    rows = [
        (n, "started" if s == "running" and not driver_alive else s)
        for n, s in trial_rows(d, _store_of(d), plans, status)
    ]
    counts = {s: sum(1 for _, x in rows if x == s) for s in STATES}
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("done", "started", "pending"))
    print(f"sweep {sweep_id}: {status.get('state')}  ({said} of {len(rows)})")
    for name, state in rows:
        print(f"  {state:<8} {name}")
    if status.get("state") == "failed":
        print(f"failed: {status.get('reason') or 'no reason recorded'}")
        print(f"start again from what is done:  vizsweep resume {sweep_id}")
    elif status.get("state") not in ("done",) and not driver_alive:
        print(f"the driver is gone: continue with  vizsweep resume {sweep_id}")
    return 0


def cmd_stop(store_uri: str, sweep_id: str) -> int:
    """Ask the sweep's driver to end its trials (each keeps its last checkpoint) and mark it stopped."""
    from orchestrator.status import request_stop

    d = find_sweep(store_uri, sweep_id)
    status = store.read_json(store.join(d, "status.json"))
    pid = status.get("driver_pid") or -1
    if status.get("state") in ("done", "failed", "stopped") or not _alive(pid):
        print(f"sweep {sweep_id} is not running (state: {status.get('state')}, driver "
              f"{'gone' if not _alive(pid) else pid}); nothing to stop")  # fmt: skip
        return 1
    request_stop(d)
    print(f"stop requested: driver {pid} ends the trials of {sweep_id} within seconds (each keeps its last "
          f"checkpoint); `vizsweep status {sweep_id}` shows 'stopped' once it has; continue later with: "
          f"vizsweep resume {sweep_id}")  # fmt: skip
    return 0


def _store_of(sweep_dir_uri: str) -> str:
    return sweep_dir_uri.rsplit("/sweeps/", 1)[0]


def cmd_report(store_uri: str, sweep_id: str, fmt: str) -> int:
    from orchestrator.report import render, report_rows

    d = find_sweep(store_uri, sweep_id)
    status = store.read_json(store.join(d, "status.json"))
    rows = report_rows(status["tracking_uri"], sweep_id)
    print(render(rows, fmt, sweep=sweep_id))
    if fmt == "md":
        _print_pruning(_store_of(d), sweep_id, status["tracking_uri"], rows)
    return 0


def cmd_ui(store_uri: str, sweep_id: str, port: int = 5000, host: str = "127.0.0.1") -> int:
    """MLflow's UI on the sweep's tracking store: the URLs once it answers, all of it ended on exit."""
    from orchestrator import uiserver
    from orchestrator.mlflow_view import runs_view_url, share_sweep_view
    from orchestrator.tracking import compare_url, find_child_runs

    d = find_sweep(store_uri, sweep_id)
    status = store.read_json(store.join(d, "status.json"))
    uri, experiment = status["tracking_uri"], status["experiment_id"]
    runs = [r.info.run_id for r in find_child_runs(uri, sweep_id)]
    share_sweep_view(uri, experiment, sweep_id)  # a sweep of an older vizsweep gets its view too

    def urls(base: str) -> str:
        return (f"runs of this sweep: {runs_view_url(base, experiment, sweep_id)}\n"
                f"compare them:      {compare_url(base, experiment, runs)}")  # fmt: skip

    if uri.startswith("http"):  # a shared server is already up: nothing to start
        print(f"MLflow server: {uri}\n{urls(uri)}")
        return 0
    port = uiserver.pick_port(host, port)
    base = f"http://{uiserver.connect_host(host)}:{port}"
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1"]  # fmt: skip
    ready = f"MLflow UI on {base} (Ctrl-C stops it)\n{urls(base)}"
    print(f"starting the MLflow UI on {base} ...", flush=True)
    try:
        return uiserver.serve(
            cmd, f"{base}/health", lambda: print(ready, flush=True), env=uiserver.server_env()
        )
    except RuntimeError as e:
        print(f"vizsweep: error: MLflow UI: {e}", file=sys.stderr)
        return 1


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
