"""``tracking_uri`` checked before a sweep starts: a scheme MLflow has a store for, a server that answers.

MLflow itself is not imported (seconds, and validate answers a bad file fast): its schemes
are listed here as MLflow 3 registers them (``mlflow.tracking._tracking_service.utils``),
plus any plugin's from the ``mlflow.tracking_store`` entry-point group. An http(s) server is
probed once with a short deadline (:data:`TIMEOUT_ENV`, default 3 s) that also covers a
hanging DNS lookup, so an unreachable host cannot hang ``vizsweep validate``.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

SCHEMES = (
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
)
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # also as engine+driver: postgresql+psycopg2://
TIMEOUT_ENV = "VIZSWEEP_TRACKING_TIMEOUT"
DEFAULT_TIMEOUT = 3.0
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def _plugin_schemes() -> list[str]:
    from importlib.metadata import entry_points

    try:
        return [ep.name for ep in entry_points(group="mlflow.tracking_store")]
    except Exception:  # a broken distribution's metadata must not break validate
        return []


def tracking_scheme_problem(uri: str) -> str | None:
    """Why MLflow has no tracking store for ``uri`` (None: it has one)."""
    if not uri.strip():
        return "expected a tracking URI (e.g. sqlite:///path/mlflow.db or http://host:5000), got ''"
    m = _SCHEME.match(uri)
    if m is None or len(m.group(1)) == 1:  # a plain path (or a Windows drive letter): MLflow's file store
        return None
    scheme = m.group(1).lower()
    engine = scheme.split("+", 1)[0]
    known = [*SCHEMES, *_plugin_schemes()]
    if scheme not in known and not (engine in _DATABASES and "+" in scheme):
        return (
            f"unknown tracking URI scheme {scheme!r}: MLflow accepts {', '.join(known)} "
            "(or a database engine+driver such as postgresql+psycopg2://), or null for the store's sqlite"
        )
    if scheme in ("http", "https") and not urlsplit(uri).hostname:
        return f"{_safe(uri)!r} names no host; write {scheme}://host:port"
    return None


def tracking_reach_problem(uri: str, timeout: float | None = None) -> str | None:
    """For an http(s) ``uri``: why its server did not answer within ``timeout`` seconds (None: it did)."""
    if urlsplit(uri).scheme.lower() not in ("http", "https"):
        return None
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
    url = uri.rstrip("/") + "/health"  # MLflow's server answers "OK" there
    result: list[str | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                result.append(None)
        except urllib.error.HTTPError:
            result.append(None)  # it answered (an auth proxy, an older server): reachable
        except Exception as e:  # URLError, timeouts, resets: not reachable
            result.append(f"{type(e).__name__}: {getattr(e, 'reason', e)}")

    thread = threading.Thread(target=probe, name="tracking-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.2)  # the thread's own deadline, plus a DNS lookup that ignores socket timeouts
    why = result[0] if result else f"no answer within {timeout:g} s"
    if why is None:
        return None
    return (
        f"the MLflow server at {_safe(url)} did not answer ({why}); start it "
        "(mlflow server --host 0.0.0.0 --port 5000), fix the URL, or set tracking_uri: null "
        f"for the store's sqlite (the probe waits {timeout:g} s; ${TIMEOUT_ENV} changes that)"
    )


def _safe(uri: str) -> str:
    """The URI without user:password@ (never echoed)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    try:
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port that is not a number
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
