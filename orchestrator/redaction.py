"""Credentials out of everything MLflow records: params, tags and reasons pass through here.

Pure functions without MLflow, so that a trial's process (which reports failures with
:func:`redact`) does not import MLflow: its runs are logged by the sweep's run log actor
(:mod:`orchestrator.run_log`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
MAX_KEY = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH

_SECRET_KEY = re.compile(r"secret|password|token|access_key|credential", re.IGNORECASE)
# scheme://userinfo@ -> scheme://; a password after ':' may hold a raw '/' (AWS secret keys do)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)(?:[^/@\s'\"]*:[^@\s'\"]*|[^/@\s'\"]+)@")
# ?X-Amz-Signature=...&token=... in presigned or tokened URLs
_SECRET_QUERY = re.compile(
    r"([?&][^=&\s'\"]*(?:secret|password|token|access_key|credential|signature)[^=&\s'\"]*=)[^&\s'\"]*",
    re.IGNORECASE,
)
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def redact(value: object) -> str:
    """``value`` as text with credentials removed from any URI inside it.

    Works on whole strings (a list of URIs rendered with ``str`` included), so
    that a credential hidden in a nested structure is caught too.
    """
    text = str(value)
    text = _USERINFO.sub(r"\1", text)
    return _SECRET_QUERY.sub(r"\1***", text)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_key(key: str) -> str:
    """A key as MLflow accepts it: characters it refuses become ``_``, cut to its length limit."""
    return truncate(_BAD_KEY_CHARS.sub("_", key), MAX_KEY)


def _sanitize(d: Mapping[str, Any], limit: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in flatten(d).items():
        if is_secret_key(key):
            continue
        out[safe_key(key)] = truncate(redact(value), limit)
    return out


def safe_params(d: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow accepts them, with no credential in keys or values.

    Flattens nested dicts with dotted keys, drops every key that looks like a
    secret (the whole dotted key is checked, so ``s3.secret_key`` goes too),
    strips userinfo from URIs and truncates values to MLflow's 6000 characters.
    """
    return _sanitize(d, MAX_PARAM_VALUE)


def safe_tags(d: Mapping[str, Any]) -> dict[str, str]:
    """Like :func:`safe_params`, with MLflow's longer tag limit."""
    return _sanitize(d, MAX_TAG_VALUE)
