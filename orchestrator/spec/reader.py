"""Reading a sweep spec: YAML read safely, validated by the spec's models, every problem reported at once.

A sweep runs for hours on rented GPUs, so every mistake the file alone shows (a misspelt
key, an unknown model or layer, α >= 1) or this machine shows (a missing dataset or
checkpoint, a GPU that is not there) must surface before ``ray.init``. :func:`load_spec`
collects *all* problems into one :class:`SpecError`, one per line, each named by its dotted
path (``attacks[1].name``) with its YAML line when known.

The YAML is bounded before anything is built from it: at most :data:`MAX_BYTES`,
:data:`MAX_NODES` nodes once aliases are expanded (a 9 x 9 "billion laughs" alias bomb is
refused in milliseconds) and :data:`MAX_DEPTH` levels; recursive aliases are refused. Exponent
floats without a dot (``1e-4``) read as numbers, as in YAML 1.2. This module imports neither
torch nor Ray before the YAML is read: a syntax error is answered in well under a second.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, get_args, get_origin

import yaml

import orchestrator.spec.messages as msgs
from shared.uris import local_path

MAX_BYTES = 5_000_000  # a sweep spec is a few KB
MAX_NODES = 100_000  # YAML nodes after alias expansion (the paper's largest spec has ~600)
MAX_DEPTH = 50  # nesting levels (a spec needs 4)
_FLOAT12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class SpecError(ValueError):
    """A sweep spec cannot be used; the message lists every problem, one per line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the sweep spec{lines}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` and ``1.0e4`` as floats (YAML 1.1 reads them as strings)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT12, list("-+0123456789."))


class _TooLarge(Exception):
    pass


def load_spec(source: str | os.PathLike | Mapping[str, Any], *, check_environment: bool = False):
    """Read a sweep spec from a YAML file (path, file:// or s3://) or a dict; raise one :class:`SpecError`.

    ``check_environment=True`` adds :func:`validate_spec`'s checks to the same report.
    """
    label, data, node = read(source)
    lines, problems = line_index(node)
    if not isinstance(data, dict):
        problems.append(
            ("", f"a sweep spec is a mapping (name:, dataset:, models:, ...), got {msgs.describe(data)}")
        )
        raise SpecError(label, [_where(p, m, lines) for p, m in problems])
    from pydantic import ValidationError

    import orchestrator.spec.checks as checks
    import orchestrator.spec.schema as schema

    _extend(problems, import_plugins(data.get("plugins")))  # before the union of attack configs is built
    model = schema.spec_model()
    spec = None
    try:
        spec = model.model_validate_json(_as_json(label, data), strict=True)
        parts = dict(spec)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        _extend(problems, _messages(model).problems(errors))
        parts = _salvage(model, data, errors)
        _extend(problems, schema.cross_problems(parts))  # sections that parsed still get their checks
    if check_environment:
        _extend(problems, checks.environment_problems(parts))
    if problems:
        long = msgs.long_strings(data)  # a 1 MB value is echoed once, cut to its head and length
        raise SpecError(label, [msgs.shorten(_where(p, m, lines), long) for p, m in problems])
    return spec


def import_plugins(modules: Any) -> list[tuple[str, str]]:
    """Import the spec's plugin modules (their registrations run); problems for the ones that fail."""
    import importlib

    out: list[tuple[str, str]] = []
    for i, name in enumerate(modules if isinstance(modules, list) else []):
        if not isinstance(name, str):
            continue  # the schema reports the type
        try:
            importlib.import_module(name)
        except Exception as e:  # any failure of a user's module is a problem with the spec
            out.append((f"plugins[{i}]", f"cannot import {name!r}: {type(e).__name__}: {e}"))
    return out


def validate_spec(spec: Any) -> None:
    """The checks this machine decides: dataset, checkpoints and reference embedder exist; resources fit."""
    from orchestrator.spec.checks import environment_problems

    problems = environment_problems(dict(spec))
    if problems:
        raise SpecError(f"sweep {spec.name!r}", [f"{path}: {msg}" for path, msg in problems])


# --- YAML ---------------------------------------------------------------------------------------


def read(source: str | os.PathLike | Mapping[str, Any]) -> tuple[str, Any, yaml.Node | None]:
    """(label, data, root node); a dict is taken as it is (it has no lines)."""
    if isinstance(source, Mapping):
        return "<dict>", dict(source), None
    label = os.fspath(source)
    try:
        raw = _read_bytes(label)
        if len(raw) > MAX_BYTES:
            raise SpecError(
                label, [f"the file has {len(raw):,} bytes; a sweep spec has at most {MAX_BYTES:,}"]
            )
        text = raw.decode("utf-8")
    except SpecError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RuntimeError) as e:  # RuntimeError: shared.store's
        raise SpecError(label, [f"cannot read the spec: {e}"]) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _measure(node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        raise SpecError(label, [_yaml_problem(e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(label, [f"YAML error: {e}"]) from None
    except RecursionError:
        raise SpecError(
            label, [f"YAML nested deeper than {MAX_DEPTH} levels (the spec reader's limit)"]
        ) from None
    except _TooLarge as e:
        raise SpecError(label, [str(e)]) from None
    finally:
        loader.dispose()
    if data is None:
        msg = "the file is empty; a sweep spec needs at least name, dataset, models, layers and attacks"
        raise SpecError(label, [f"{msg} (see examples/quickstart.yaml)"])
    return label, data, node


def _read_bytes(label: str) -> bytes:
    """A local file directly (pyarrow is not imported for it: a syntax error is answered fast), S3 via the store."""
    path = local_path(label)
    if path is None:
        from shared import store

        return store.read_bytes(label)
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise SpecError(label, [f"the file has {size:,} bytes; a sweep spec has at most {MAX_BYTES:,}"])
    with open(path, "rb") as f:
        return f.read()


def _children(n: yaml.Node) -> list[yaml.Node]:
    if isinstance(n, yaml.MappingNode):
        return [x for pair in n.value for x in pair]
    return list(n.value) if isinstance(n, yaml.SequenceNode) else []


def _measure(root: yaml.Node) -> None:
    """Raise _TooLarge past MAX_NODES (aliases expanded) or MAX_DEPTH, or on a recursive alias.

    An alias is the same node object as its anchor, so counts are memoised per node: the work is
    linear in the *written* document however far its aliases would expand."""
    memo: dict[int, tuple[int, int]] = {}  # node id -> (expanded node count, height)
    active: set[int] = set()

    def visit(n: yaml.Node, depth: int) -> tuple[int, int]:
        line = n.start_mark.line + 1
        if id(n) in active:
            raise _TooLarge(f"YAML recursive alias: the node at line {line} contains an alias of itself")
        count, height = memo.get(id(n), (0, -1))
        if height < 0:
            active.add(id(n))
            count, height = 1, 0
            for child in _children(n):
                c, h = visit(child, depth + 1)
                count, height = count + c, max(height, h + 1)
                if count > MAX_NODES:
                    raise _TooLarge(
                        f"YAML too large: more than {MAX_NODES:,} nodes once its aliases (*name) are expanded "
                        f"(the spec reader's limit, against alias bombs; at line {line}); write fewer aliases"
                    )
            active.discard(id(n))
            memo[id(n)] = (count, height)
        if depth + height > MAX_DEPTH:
            raise _TooLarge(
                f"YAML nested deeper than {MAX_DEPTH} levels at line {line} (the spec reader's limit)"
            )
        return count, height

    visit(root, 0)


def _yaml_problem(e: yaml.MarkedYAMLError) -> str:
    """'YAML syntax error at line 3, column 1: <problem> (<context> at line 2)'."""
    mark, context = e.problem_mark or e.context_mark, e.context or ""
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    if context and e.context_mark is not None and e.problem_mark is not None:
        context += f" at line {e.context_mark.line + 1}"
    detail = f"{e.problem} ({context})" if e.problem and context else e.problem or context
    return f"YAML syntax error{where}: {detail}"


def line_index(node: yaml.Node | None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Dotted path -> YAML line, and the keys written twice (PyYAML silently keeps the last)."""
    lines: dict[str, int] = {}
    duplicates: list[tuple[str, str]] = []

    def walk(n: yaml.Node, path: str) -> None:  # bounded: _measure checked nodes and depth
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in n.value:
                name, line = str(key.value), key.start_mark.line + 1
                sub = msgs.join(path, name)
                if name in seen:
                    msg = f"key {name!r} appears twice (lines {seen[name]} and {line}); YAML keeps the last"
                    duplicates.append((sub, f"{msg}, so delete one"))
                seen[name] = line
                lines[sub] = line
                walk(value, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, f"{path}[{i}]")

    if node is not None:
        walk(node, "")
    return lines, duplicates


def _where(path: str, message: str, lines: Mapping[str, int]) -> str:
    line, p = None, path
    while p and line is None:  # a missing key has no line: use its parent's
        line, p = lines.get(p), msgs.parent(p)
    return (path or "(top level)") + (f" (line {line})" if line else "") + f": {message}"


def _extend(problems: list[tuple[str, str]], more: Sequence[tuple[str, str]]) -> None:
    problems.extend(p for p in more if p not in problems)


def _as_json(label: str, data: Any) -> str:
    """JSON, so that pydantic's strict mode reads YAML lists as tuples (a date or a set becomes a string)."""
    try:
        return json.dumps(data, default=str)
    except (TypeError, ValueError) as e:
        raise SpecError(label, [f"(top level): cannot read a value: {e}"]) from None


# --- pydantic's errors -> problems --------------------------------------------------------------


def _messages(model: type) -> msgs.Messages:
    from shared.attacks import AttackConfig, families, family_of

    def member(tag: Any) -> Any:
        try:
            return family_of(str(tag)).config
        except KeyError:
            return None

    def unknown_tag(tag: Any) -> str:
        try:
            family_of(str(tag))
            return f"attack {tag!r} is not valid here"
        except KeyError as e:
            names = [a for fam in families() for a in fam.attacks]
            return f"{e.args[0]}{msgs.did_you_mean(tag, names)}"

    def elsewhere(key: str, owner: Any) -> str:
        if owner is model:
            for name, section in ((n, f.annotation) for n, f in model.model_fields.items()):
                if isinstance(section, type) and key in msgs.fields_of(section):
                    return f"; it belongs under {name}: ({name}.{key})"
        owners = [fam for fam in families() if key in fam.config.model_fields]
        if not owners:
            return ""
        if isinstance(owner, type) and issubclass(owner, AttackConfig):
            mine = next((f.name for f in families() if f.config is owner), "?")
            where = ", ".join(f"{f.name!r} (attacks: {', '.join(f.attacks)})" for f in owners)
            return f"; {key!r} is a setting of family {where}, not of family {mine!r}"
        return f"; it is an attack setting: set it on the attacks[i] entries it applies to (attacks[i].{key})"

    locator = msgs.Locator(model, lambda tp: tp is AttackConfig, member)
    tags = [a for fam in families() for a in fam.attacks]
    return msgs.Messages(locator, elsewhere, unknown_tag, tags)


def _salvage(model: Any, data: dict, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The sections (and list items) that are valid on their own, None where not, for the later checks."""
    from pydantic import TypeAdapter, ValidationError
    from pydantic_core import PydanticUndefined

    bad: dict[Any, list[tuple]] = {}
    for e in errors:
        if e["loc"]:
            bad.setdefault(e["loc"][0], []).append(e["loc"])

    def check(tp: Any, value: Any) -> Any:
        try:
            return TypeAdapter(tp).validate_json(json.dumps(value, default=str), strict=True)
        except (ValidationError, TypeError, ValueError):
            return None

    parts: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        tp = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        if name not in bad:
            if name in data:
                parts[name] = check(tp, data[name])
            elif info.default is not PydanticUndefined:
                parts[name] = (
                    TypeAdapter(tp).validate_python(info.default) if info.validate_default else info.default
                )
        elif get_origin(info.annotation) is tuple and isinstance(data.get(name), list):
            if all(len(loc) > 1 and isinstance(loc[1], int) for loc in bad[name]):
                item = get_args(info.annotation)[0]
                parts[name] = tuple(check(item, x) for x in data[name])
    return parts
