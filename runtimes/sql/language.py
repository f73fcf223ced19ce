"""SQL jobs, read in Python: the parameters declared in comments, the statements split
with a real tokenizer (sqlglot) confirmed by SQLite's own `complete_statement`, and
the job message the wrapper (runtimes/sql/wrapper.py) executes.

A script declares each parameter in a comment, `-- :name (type) = default` (SQLite),
and uses it as `:name`; an undeclared placeholder is refused before anything runs.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import Token, TokenType

from gristmill.errors import InvalidRequest
from gristmill.languages.plugin import ArgumentsRejected, LanguagePlugin
from gristmill.languages.syntax import MAX_SOURCE_BYTES
from gristmill.model import Job

DATABASE_VARIABLE = "SQL_DATABASE"
"""`Job.env` key naming a database configured on the server; absent: a fresh SQLite one."""
RESULTS_VARIABLE = "SQL_RESULTS"
"""`Job.env` key: `all` returns every statement's result, else the last rows."""
COMMIT_VARIABLE = "SQL_COMMIT"
"""`Job.env` key: `1`/`true` commits the job's transaction, else it is rolled back."""

_DECLARATION = re.compile(
    r"""^\s*:(?P<name>[A-Za-z_][A-Za-z0-9_]*)
        (?:\s*\(\s*(?P<type>[A-Za-z][A-Za-z0-9 _]*?)\s*\))?
        (?:\s*=\s*(?P<default>.*?))?\s*$""",
    re.VERBOSE,
)

# Declared type (lowercase) -> (canonical kind, JSON Schema).
_TYPES: dict[str, tuple[str, dict[str, Any]]] = {}
for _names, _kind, _schema in (
    (("int", "integer", "bigint", "smallint"), "integer", {"type": "integer"}),
    (("float", "real", "double", "number", "numeric", "decimal"), "number", {"type": "number"}),
    (("text", "string", "varchar", "char"), "text", {"type": "string"}),
    (("bool", "boolean"), "boolean", {"type": "boolean"}),
    (("json", "jsonb"), "json", {}),
    (("blob", "bytes", "bytea"), "blob", {"type": "string", "contentEncoding": "base64"}),
    (("date",), "text", {"type": "string", "format": "date"}),
    (("timestamp", "datetime"), "text", {"type": "string", "format": "date-time"}),
):
    for _name in _names:
        _TYPES[_name] = (_kind, _schema)


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str | None  # the declared type as written, lowercased; None when untyped
    kind: str  # integer, number, text, boolean, json, blob, or any
    default: Any
    has_default: bool


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # the line of its first token in the script, from 1
    names: tuple[str, ...]  # the parameters it uses


def _tokens(code: str) -> list[Token]:
    if len(code.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise InvalidRequest("code", f"is over {MAX_SOURCE_BYTES} bytes")
    return list(SQLite().tokenize(code))


def _default(text: str, kind: str) -> Any:
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if kind == "text" and not isinstance(value, str):
        return text
    return value


def parameters(code: str) -> list[Parameter]:
    """The parameters declared in the script's comments, first declaration of each wins."""
    found: dict[str, Parameter] = {}
    try:
        tokens = _tokens(code)
    except TokenError as error:
        raise InvalidRequest("code", f"does not tokenize as SQL: {error}") from error
    comments = [comment for token in tokens for comment in token.comments]
    for comment in comments:
        for line in comment.splitlines():
            match = _DECLARATION.match(line)
            if match is None or match["name"] in found:
                continue
            declared = match["type"].lower() if match["type"] else None
            if declared is not None and declared not in _TYPES:
                raise InvalidRequest(
                    "code", f"parameter :{match['name']}: unknown type {declared!r}"
                )
            kind = _TYPES[declared][0] if declared else "any"
            has_default = match["default"] is not None
            default = _default(match["default"], kind) if has_default else None
            found[match["name"]] = Parameter(match["name"], declared, kind, default, has_default)
    return list(found.values())


def statements(code: str) -> list[Statement]:
    """The script's statements in order, split where the tokenizer finds a `;` that
    SQLite itself says completes a statement (so a trigger's body stays whole).

    Raises ArgumentsRejected for a placeholder other than a `:name`."""
    tokens = _tokens(code)
    result: list[Statement] = []
    start = 0
    pending: list[Token] = []

    def close(end: int) -> None:
        nonlocal start, pending
        body = [t for t in pending if t.token_type != TokenType.SEMICOLON]
        if body:
            names = tuple(
                dict.fromkeys(
                    nxt.text
                    for prev, nxt in itertools.pairwise(pending)
                    if prev.token_type == TokenType.COLON and prev.end + 1 == nxt.start
                )
            )
            result.append(Statement(code[start:end], body[0].line, names))
        start, pending = end, []

    for token in tokens:
        if token.token_type in (TokenType.PLACEHOLDER, TokenType.PARAMETER) or (
            token.token_type == TokenType.VAR and token.text[:1] in "$@?"
        ):
            raise ArgumentsRejected(
                f"line {token.line}: placeholder {token.text!r}: "
                "declare parameters as `-- :name (type)` and use them as `:name`"
            )
        pending.append(token)
        if token.token_type == TokenType.SEMICOLON and sqlite3.complete_statement(
            code[start : token.end + 1]
        ):
            close(token.end + 1)
    close(len(code))
    return result


def _check(parameter: Parameter, value: Any) -> Any:
    if value is None:
        return None
    kind, name = parameter.kind, parameter.name
    if kind == "integer" and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise ArgumentsRejected(f"argument {name!r} must be {parameter.type}, got {value!r}")
    if kind == "integer":
        return int(value)
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ArgumentsRejected(f"argument {name!r} must be {parameter.type}, got {value!r}")
    if kind == "text" and not isinstance(value, str):
        raise ArgumentsRejected(f"argument {name!r} must be {parameter.type}, got {value!r}")
    if kind == "boolean" and not isinstance(value, bool):
        raise ArgumentsRejected(f"argument {name!r} must be {parameter.type}, got {value!r}")
    if kind == "blob":
        try:
            base64.b64decode(value, validate=True)
        except (TypeError, ValueError, binascii.Error) as error:
            raise ArgumentsRejected(f"argument {name!r} must be base64 text") from error
    return value


def _flag(env: Mapping[str, str], key: str) -> bool:
    return env.get(key, "").strip().lower() in {"1", "true", "yes", "commit"}


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        properties: dict[str, Any] = {}
        for parameter in parameters(code):
            schema = dict(_TYPES[parameter.type][1]) if parameter.type else {}
            if parameter.has_default:
                schema["default"] = parameter.default
            properties[parameter.name] = schema
        required = [p.name for p in parameters(code) if not p.has_default]
        return {"type": "object", "properties": properties, "required": required}

    def job_message(self, job: Job, source_path: str) -> bytes:
        database = job.env.get(DATABASE_VARIABLE, "")
        if database:
            raise ArgumentsRejected(f"unknown database {database!r}")
        try:
            declared = {p.name: p for p in parameters(job.code)}
            split = statements(job.code)
        except (InvalidRequest, TokenError):
            # SQLite reads it whole and reports the error itself, with its own words.
            declared, split = {}, [Statement(job.code, 1, ())]
        for statement in split:
            for name in statement.names:
                if name not in declared:
                    raise ArgumentsRejected(
                        f"line {statement.line}: placeholder :{name} is not declared "
                        f"(add a `-- :{name} (type)` comment)"
                    )
        unknown = sorted(set(job.args) - set(declared))
        if unknown:
            raise ArgumentsRejected(f"unknown argument {unknown[0]!r}")
        values: dict[str, Any] = {}
        for name, parameter in declared.items():
            if name in job.args:
                values[name] = _check(parameter, job.args[name])
            elif parameter.has_default:
                values[name] = _check(parameter, parameter.default)
            else:
                raise ArgumentsRejected(f"missing argument {name!r}")
        message = {
            "statements": [{"sql": s.sql, "line": s.line, "names": list(s.names)} for s in split],
            "params": values,
            "types": {name: p.kind for name, p in declared.items()},
            "results": "all" if job.env.get(RESULTS_VARIABLE, "") == "all" else "last",
            "commit": _flag(job.env, COMMIT_VARIABLE),
        }
        return json.dumps(message).encode()
