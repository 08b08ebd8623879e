"""Pydantic's validation errors -> the spec's one-line problems (field path, what is valid, how to fix).

Every error of a :class:`pydantic.ValidationError` becomes ``(path, message)``: the path is
dotted with ``[i]`` indices (``attacks[2].decoy_class``; the discriminated union's tag that
pydantic puts in its ``loc`` is dropped), the message names the value, the valid options and
a did-you-mean. Validators report a problem of another field with
``shared.attacks.ConfigProblem(field, message)``, several at once with :class:`Problems`,
a repeated list item with :class:`Repeated`. This module imports neither torch nor pydantic's
models: the YAML reader answers syntax errors without them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any, get_args, get_origin

MAX_SHOWN = 200  # characters of a value echoed in a message (a 1 MB value is not echoed back)
_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a non-empty string",
    "tuple_type": "a list",
    "list_type": "a list",
}
_MAPPING = {"model_type", "model_attributes_type", "dataclass_type", "dict_type", "dataclass_exact_type"}
_LIMITS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_CTX = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}


class Problems(ValueError):
    """Several problems of one object at once: (field path relative to it, message) pairs."""

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in self.problems))


class Repeated(ValueError):
    """Item ``index`` of a list equals item ``first``; each item runs once."""

    def __init__(self, index: int, first: int) -> None:
        self.index, self.first = index, first
        super().__init__(f"item {index} repeats item {first}")


def describe(raw: Any) -> str:
    """A value as a message shows it, cut to :data:`MAX_SHOWN` characters."""
    if isinstance(raw, str):
        return f"the string {cut(raw)!r}"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if raw is None:
        return "null"
    return {list: "a list", tuple: "a list", dict: "a mapping"}.get(type(raw), shown(raw))


def cut(text: str) -> str:
    """``text``, or its first :data:`MAX_SHOWN` characters and its length."""
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}… ({len(text):,} chars)"


def long_strings(data: Any, limit: int = MAX_SHOWN) -> list[str]:
    """Every string (key or value) in a parsed document longer than ``limit``, longest first."""
    found: set[str] = set()
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, str) and len(x) > limit:
            found.add(x)
        elif isinstance(x, dict):
            stack.extend(k for k in x if isinstance(k, str))
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)
    return sorted(found, key=len, reverse=True)


def shorten(message: str, long: Sequence[str]) -> str:
    """``message`` with each long value echoed once, cut (a second echo becomes '…'); capped in length."""
    for s in long:
        for form in (s, repr(s)[1:-1]):
            message = message.replace(form, cut(form))
            echoes = list(re.finditer(re.escape(form[:MAX_SHOWN]) + r"(… \([\d,]+ chars\))?", message))
            for m in reversed(echoes[1:]):  # the first echo stays; later ones point back to it
                message = message[: m.start()] + "…" + message[m.end() :]
    return message if len(message) <= 8 * MAX_SHOWN else cut_long(message)


def cut_long(message: str) -> str:
    """A message still too long (a value not found verbatim): its head and its length."""
    return f"{message[: 8 * MAX_SHOWN]}… ({len(message):,} chars)"


def shown(raw: Any) -> str:
    """``repr`` of a value, a long string cut to its head and its length (the value's, not the repr's)."""
    return repr(cut(raw)) if isinstance(raw, str) else cut(repr(raw))


def did_you_mean(value: Any, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def join(path: str, name: str) -> str:
    if not path or name.startswith("["):
        return f"{path}{name}"
    return f"{path}.{name}" if name else path


def parent(path: str) -> str:
    return re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path) if re.search(r"[.\[]", path) else ""


# --- the type at a loc ----------------------------------------------------------------------


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X."""
    while True:
        if get_origin(tp) is not None and hasattr(tp, "__metadata__"):
            tp = get_args(tp)[0]
            continue
        args = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) is not tuple else []
        if len(args) == 1 and len(get_args(tp)) == 2:
            tp = args[0]
            continue
        return tp


def fields_of(cls: Any) -> dict[str, Any]:
    """Field name -> (annotation, description) of a pydantic model or a dataclass; {} otherwise."""
    if isinstance(cls, type) and hasattr(cls, "model_fields"):
        return {n: (f.annotation, f.description) for n, f in cls.model_fields.items()}
    if dataclasses.is_dataclass(cls):
        return {f.name: (f.type, None) for f in dataclasses.fields(cls)}
    return {}


class Locator:
    """Walks a pydantic ``loc`` through the spec's types: the readable path, the model at each step.

    ``union_member(tp, tag)`` gives the member class of a discriminated union for a tag (the
    attack families' configs); ``is_union(tp)`` says whether ``tp`` is such a union.
    """

    def __init__(self, root: type, is_union, union_member) -> None:
        self.root, self.is_union, self.union_member = root, is_union, union_member

    def walk(self, loc: Sequence[Any]) -> tuple[str, Any, Any, str | None]:
        """(path, owner type of the last key, type at loc, the field's description)."""
        path, tp, owner, desc = "", self.root, None, None
        for part in loc:
            if isinstance(part, int):
                path, owner, desc = f"{path}[{part}]", tp, None
                tp = _strip(get_args(tp)[0]) if get_origin(tp) is tuple and get_args(tp) else None
                continue
            if tp is not None and self.is_union(tp) and self.union_member(part) is not None:
                tp = self.union_member(part)  # the union's tag: not part of the path
                continue
            fields = fields_of(tp)
            owner = tp
            path = join(path, str(part))
            ann, desc = fields.get(part, (None, None))
            tp = _strip(ann) if ann is not None else None
        return path, owner, tp, desc


# --- one error -> problems --------------------------------------------------------------------


class Messages:
    """Turns pydantic error dicts into (path, message) pairs for one root model.

    ``elsewhere(key, owner)`` returns a hint for a key unknown where it stands but valid in
    another place (``"; it belongs under training: (training.lr)"``) or ``""``; ``unknown_tag(tag)``
    the message for an unknown attack name.
    """

    def __init__(self, locator: Locator, elsewhere, unknown_tag, tags: Sequence[str]) -> None:
        self.loc, self.elsewhere, self.unknown_tag, self.tags = locator, elsewhere, unknown_tag, tags

    def problems(self, errors: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for e in errors:
            for p in self.one(e):
                if p not in out:
                    out.append(p)
        return out

    def one(self, e: dict[str, Any]) -> list[tuple[str, str]]:
        kind, ctx, raw = e["type"], e.get("ctx") or {}, e.get("input")
        path, owner, tp, desc = self.loc.walk(e["loc"])
        hint = f" ({desc})" if desc else ""
        if kind == "missing":
            return [(path, f"missing; it is required{hint}")]
        if (
            kind == "too_short" and raw
        ):  # pydantic counts a list whose items failed as empty: already reported
            return []
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            return [(path, self.unknown_key(owner, e["loc"][-1]))]
        if kind == "union_tag_invalid":
            return [(join(path, "name"), self.unknown_tag(ctx.get("tag", raw)))]
        if kind == "union_tag_not_found" or (kind in _MAPPING and self.loc.is_union(tp)):
            if isinstance(raw, dict):
                return [(join(path, "name"), f"missing; it is required (one of: {', '.join(self.tags)})")]
            fix = f"; write {{name: {raw}}}" if isinstance(raw, str) else ""
            return [(path, f"expected a mapping ({{name: <attack>, ...}}), got {describe(raw)}{fix}")]
        if kind in ("value_error", "assertion_error") and "error" in ctx:
            return self.raised(path, ctx["error"])
        return [(path, self.simple(kind, ctx, raw, tp, hint) or e["msg"])]

    def simple(self, kind: str, ctx: dict, raw: Any, tp: Any, hint: str) -> str | None:
        if kind in _WORDS:
            want = _WORDS[kind]
            if raw is None:
                return f"must not be null; expected {want}"
            fix = (
                f"; write [{cut(str(raw))}]"
                if want == "a list" and isinstance(raw, str | int | float)
                else ""
            )
            return f"expected {want}, got {describe(raw)}{fix}"
        if kind in _MAPPING:
            keys = ", ".join(fields_of(tp)) if fields_of(tp) else "keys"
            return f"expected a mapping ({keys}), got {describe(raw)}"
        if kind in _LIMITS:
            return f"must be {_LIMITS[kind]} {ctx.get(_CTX[kind])}, got {shown(raw)}"
        if kind == "finite_number":
            return f"expected a finite number, got {describe(raw)}"
        if kind == "too_short":
            return f"must not be empty{hint}"
        if kind == "string_too_short":
            return "expected a non-empty string, got ''"
        if kind == "string_pattern_mismatch":
            return f"{shown(raw)} does not match the pattern {ctx.get('pattern')}"
        if kind == "literal_error":
            valid = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
            return f"{shown(raw)} is not one of: {', '.join(valid)}{did_you_mean(raw, valid)}"
        return None

    def raised(self, path: str, err: BaseException) -> list[tuple[str, str]]:
        """A validator's own exception: ConfigProblem -> its field, Problems -> each, Repeated -> its item."""
        if isinstance(err, Problems):
            return [(join(path, sub), msg) for sub, msg in err.problems]
        if isinstance(err, Repeated):
            return [(f"{path}[{err.index}]", f"repeats {path}[{err.first}]; each runs once, so remove one")]
        field = getattr(err, "field", None)  # shared.attacks.ConfigProblem
        if isinstance(field, str):
            return [(join(path, field), str(err))]
        m = re.match(r"^\w+\.(\w+)=(.*)$", str(err), re.S)  # AlphaConfig's "AlphaConfig.alpha_max=1.0: ..."
        return [(join(path, m.group(1)), m.group(2))] if m else [(path, str(err))]

    def unknown_key(self, owner: Any, key: Any) -> str:
        names = list(fields_of(owner))
        hint = self.elsewhere(str(key), owner) or did_you_mean(key, names)
        return f"unknown key {cut(str(key))!r}" + (hint or f"; valid keys: {', '.join(names)}")
