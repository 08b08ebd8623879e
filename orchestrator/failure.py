"""A launch that raised: its sweep is marked ``failed`` with the reason, in status.json and MLflow.

Without this a crashed launch stays ``preparing``/``tables`` in ``vizsweep status`` forever and
its MLflow runs stay RUNNING. ``vizsweep resume`` of a failed sweep starts again from what the
store holds.
"""

from __future__ import annotations

import logging
import time

from orchestrator.redaction import redact, safe_tags
from orchestrator.status import write_status
from shared import store

log = logging.getLogger(__name__)

REASON_CHARS = 1000  # one readable line in `vizsweep status`
TAG_FAILURE = "vizsweep.failure"


# Faults of the machine or the cluster, not of the trial's inputs: retried (Tune's max_failures).
# OSError covers TimeoutError and ConnectionError.
_TRANSIENT = (OSError, MemoryError)
# OSErrors that a retry cannot fix: a missing or unreadable file stays so.
_LASTING_OS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_deterministic(exc: BaseException) -> bool:
    """True for an error a retry would repeat (bad config, bad data, a bug); False for an
    infrastructure fault (a lost worker or node, the network, memory) or a stop request."""
    from ray.exceptions import RayError, RayTaskError

    if isinstance(exc, RayTaskError):  # a remote function's own error travels wrapped
        cause = exc.cause
        return cause is not None and not isinstance(cause, RayError) and is_deterministic(cause)
    if not isinstance(exc, Exception) or isinstance(exc, RayError):
        return False
    if isinstance(exc, _LASTING_OS):
        return True
    if isinstance(exc, _TRANSIENT):
        return False
    return type(exc).__name__ != "OutOfMemoryError"  # torch's CUDA OOM: another node may have room


def reason_of(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to REASON_CHARS, credentials in URIs removed."""
    text = " ".join(str(exc).split())
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 1] + "…"
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def mark_launch_failed(sdir: str, sweep_id: str, exc: BaseException) -> None:
    """Record the failure; never raises (the launch's own exception is the one the user must see)."""
    uri = store.join(sdir, "status.json")
    try:
        if not store.exists(uri):
            return  # failed before the sweep had a status: nothing shows it as running
        reason = reason_of(exc)
        write_status(sdir, state="failed", reason=reason, finished=time.time())
        status = store.read_json(uri)
    except Exception as e:  # the store itself may be what failed
        log.warning("could not mark sweep %s failed in %s: %s", sweep_id, uri, e)
        return
    if status.get("tracking_uri") and status.get("parent_run_id"):
        fail_runs(status["tracking_uri"], sweep_id, status["parent_run_id"], reason)


def fail_runs(tracking_uri: str, sweep_id: str, parent_run_id: str, reason: str) -> None:
    """The sweep's RUNNING trial runs and its parent run: FAILED, the reason tagged on the parent."""
    from orchestrator.tracking import client, find_child_runs  # MLflow: not in the trials that import this

    try:
        c = client(tracking_uri)
        for run in find_child_runs(tracking_uri, sweep_id, status="RUNNING"):
            c.set_terminated(run.info.run_id, "FAILED")
        for k, v in safe_tags({TAG_FAILURE: reason}).items():
            c.set_tag(parent_run_id, k, v)
        c.set_terminated(parent_run_id, "FAILED")
    except Exception as e:  # MLflow may be what failed; status.json already says why
        log.warning("could not mark the MLflow runs of sweep %s FAILED: %s", sweep_id, e)
