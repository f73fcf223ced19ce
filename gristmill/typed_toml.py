"""Reading a TOML file against its typed model: one way for every kind of file.

The server's configuration, `runtime.toml`, sandbox profiles and conformance cases are
each declared once as a pydantic model that refuses unknown keys. This module reads
such a file and says what is wrong in the user's words: the key, the file, its line, and
for a misspelt key the likely one ("default_limits.wall_time_ms in /etc/gristmill.toml
line 12: must be at least 1, got 0").
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

__all__ = [
    "Loc",
    "adapter",
    "describe",
    "dotted",
    "explain",
    "fields_at",
    "line_of",
    "read",
    "suggest",
    "validate",
]

Loc = tuple[str | int, ...]

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


@functools.cache
def adapter(kind: Any) -> TypeAdapter[Any]:
    """The validator of model `kind`, built once (building one takes milliseconds)."""
    return TypeAdapter(kind)


def read(path: Path, error: type[Exception]) -> tuple[dict[str, Any], str]:
    """The file's tables and its text (for line numbers); `error` when it is not TOML."""
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text), text
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as cause:
        raise error(f"{path}: cannot be read as TOML: {cause}") from cause


def _keys(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


def _lines(text: str) -> dict[Loc, int]:
    """The line where each key (or table) is first written; an array of tables'
    entries are numbered from 0, as pydantic's locations are."""
    found: dict[Loc, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: Loc = ()
    closing = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if closing:  # inside a multi-line string: code, not keys
            closing = "" if closing in line else closing
            continue
        header = _HEADER.match(line)
        if header:
            keys = _keys(header[2])
            if header[1] == "[[":
                counts[keys] = counts.get(keys, -1) + 1
            resolved: list[str | int] = []
            for end in range(1, len(keys) + 1):
                resolved.append(keys[end - 1])
                if keys[:end] in counts:
                    resolved.append(counts[keys[:end]])
            table = tuple(resolved)
            found.setdefault(table, number)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            found.setdefault(table + _keys(assign[1]), number)
            rest = line[assign.end() :]
            closing = next((q for q in ('"""', "'''") if rest.count(q) == 1), "")
    return found


def line_of(text: str, loc: Loc) -> int | None:
    """The line that sets `loc`, else the nearest table around it that is written."""
    lines = _lines(text)
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def dotted(loc: Loc) -> str:
    """A location as the user writes it: `case[2].expect.verdict`."""
    out = ""
    for part in loc:
        out += f"[{part + 1}]" if isinstance(part, int) else f".{part}" if out else part
    return out


def _unwrap(kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    if typing.get_origin(kind) is typing.Annotated:
        return args[0]
    return kind


def _written(name: str, info: FieldInfo) -> str:
    """A field's key in a file: its alias, if it has one."""
    alias = info.validation_alias
    return alias if isinstance(alias, str) else info.alias or name


def fields_at(kind: Any, loc: Loc) -> list[str]:
    """The keys a table of model `kind` at `loc` may have (for a suggestion)."""
    kind = _unwrap(kind)
    if loc:
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin in (list, tuple, Sequence) and args:
            return fields_at(args[0], loc[1:])
        if origin in (dict, Mapping) and args:
            return fields_at(args[1], loc[1:])
    names: dict[str, Any] = {}
    fields = getattr(kind, "__pydantic_fields__", None)
    if fields is not None:
        names = {_written(name, info): info.annotation for name, info in fields.items()}
    elif dataclasses.is_dataclass(kind):
        names = typing.get_type_hints(kind)
    if not loc:
        return list(names)
    return fields_at(names[loc[0]], loc[1:]) if loc[0] in names else []


def suggest(name: str, known: Sequence[str]) -> str:
    """ "; did you mean 'x'?" when a known key is close to `name`."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def explain(problem: Mapping[str, Any], known: Sequence[str] = ()) -> str:
    """One pydantic error in the words of the file's author."""
    kind, ctx, value = problem["type"], problem.get("ctx") or {}, problem.get("input")
    got = f", got {_shown(value)}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key" + suggest(str(problem["loc"][-1]), known)
    if kind in ("missing", "missing_argument", "missing_keyword_only_argument"):
        return "is required"
    if kind == "greater_than_equal":
        return f"must be at least {_shown(ctx['ge'])}{got}"
    if kind == "less_than_equal":
        return f"must be at most {_shown(ctx['le'])}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}{got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected int{got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"not a boolean (true or false){got}"
    if kind in ("string_type", "float_type", "list_type", "tuple_type", "dict_type"):
        noun = {"string": "a string", "float": "a number", "dict": "a table"}
        return f"must be {noun.get(kind[:-5], 'a list')}{got}"
    message = str(problem["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def validate(kind: Any, data: Any, path: Path, text: str, error: type[Exception]) -> Any:
    """`data` (read from `path`, whose text is `text`) as model `kind`, or `error`
    naming the key, the file and its line for each problem."""
    try:
        return adapter(kind).validate_python(data)
    except ValidationError as failure:
        raise error(describe(kind, failure, path, text)) from None


def describe(kind: Any, failure: ValidationError, path: Path, text: str) -> str:
    """Every problem of `failure`, one a line."""
    lines = []
    for problem in failure.errors():
        loc = tuple(part for part in problem["loc"] if not str(part).startswith("function-"))
        line = line_of(text, loc)
        where = f"{path} line {line}" if line else str(path)
        words = explain(problem, fields_at(kind, loc[:-1]))
        lines.append(f"{dotted(loc)} in {where}: {words}" if loc else f"{where}: {words}")
    return "\n".join(lines)
