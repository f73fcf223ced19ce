"""SQL jobs, read in Python: the parameters declared in comments, the statements split
with a real tokenizer (sqlglot) confirmed by SQLite's own `complete_statement`, and
the job message the wrapper (runtimes/sql/wrapper.py) executes.

A script declares each parameter in a comment, `-- :name (type) = default` (SQLite),
and uses it as `:name`, or `-- $1 name (type) = default` (PostgreSQL) and uses `$1`;
an undeclared placeholder is refused before anything runs.

Which database a job uses is `Job.env["SQL_DATABASE"]`: a name configured on the
server (`databases.<name>.*`), or none for a fresh SQLite database of the job's own.
A PostgreSQL job's statements reach the database through `relay.Relay`, served by
the service on a Unix socket mounted into the job's sandbox.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import logging
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import Token, TokenType

from gristmill.languages import (
    ArgumentsRejected,
    BindMount,
    DatabaseConfig,
    InvalidRequest,
    Job,
    LanguagePlugin,
)
from gristmill.languages.syntax import MAX_SOURCE_BYTES

from .relay import Relay

DATABASE_VARIABLE = "SQL_DATABASE"
"""`Job.env` key naming a database configured on the server; absent: a fresh SQLite one."""
RESULTS_VARIABLE = "SQL_RESULTS"
"""`Job.env` key: `all` returns every statement's result, else the last rows."""
COMMIT_VARIABLE = "SQL_COMMIT"
"""`Job.env` key: `1`/`true` commits the job's transaction, else it is rolled back."""
JAIL_DATABASE_DIR = "/gristmill/database"
"""Where a named database's folder (SQLite) or the relay's socket (PostgreSQL) is mounted."""
RELAY_SOCKET = "relay.sock"

log = logging.getLogger(__name__)


_DECLARATION = re.compile(
    r"""^\s*:(?P<name>[A-Za-z_][A-Za-z0-9_]*)
        (?:\s*\(\s*(?P<type>[A-Za-z][A-Za-z0-9 _]*?)\s*\))?
        (?:\s*=\s*(?P<default>.*?))?\s*$""",
    re.VERBOSE,
)

_POSITIONAL_DECLARATION = re.compile(
    r"""^\s*\$(?P<position>[1-9][0-9]{0,3})\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)
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
    position: int = 0  # PostgreSQL's $n; 0 for a named SQLite parameter


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # the line of its first token in the script, from 1
    names: tuple[str, ...]  # the parameters it uses: names, or PostgreSQL's "$n" in order
    start_line: int = 1  # the line its text starts on (an error position counts from it)


def _tokens(code: str, postgres: bool = False) -> list[Token]:
    if len(code.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise InvalidRequest("code", f"is over {MAX_SOURCE_BYTES} bytes")
    return list((Postgres() if postgres else SQLite()).tokenize(code))


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


def parameters(code: str, postgres: bool = False) -> list[Parameter]:
    """The parameters declared in the script's comments, first declaration of each wins:
    `-- :name (type) = default` for SQLite, `-- $1 name (type) = default` for PostgreSQL."""
    found: dict[str, Parameter] = {}
    taken: set[int] = set()
    try:
        tokens = _tokens(code, postgres)
    except TokenError as error:
        raise InvalidRequest("code", f"does not tokenize as SQL: {error}") from error
    comments = [comment for token in tokens for comment in token.comments]
    for comment in comments:
        for line in comment.splitlines():
            match = (_POSITIONAL_DECLARATION if postgres else _DECLARATION).match(line)
            if match is None or match["name"] in found:
                continue
            position = int(match["position"]) if postgres else 0
            if postgres and position in taken:
                continue
            taken.add(position)
            declared = match["type"].lower() if match["type"] else None
            if declared is not None and declared not in _TYPES:
                raise InvalidRequest(
                    "code", f"parameter :{match['name']}: unknown type {declared!r}"
                )
            kind = _TYPES[declared][0] if declared else "any"
            has_default = match["default"] is not None
            default = _default(match["default"], kind) if has_default else None
            found[match["name"]] = Parameter(
                match["name"], declared, kind, default, has_default, position
            )
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
            result.append(
                Statement(code[start:end], body[0].line, names, code[:start].count("\n") + 1)
            )
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


def postgres_statements(code: str) -> list[Statement]:
    """The script's statements for PostgreSQL, split at the tokenizer's `;` (a
    dollar-quoted body is one string token). Each statement's `$n` are renumbered
    `$1`, `$2`... in order of first use, token by token, and `names` lists the script's
    own `$n` in that order, so that a statement is sent exactly the values it uses."""
    tokens = _tokens(code, postgres=True)
    result: list[Statement] = []
    start = 0
    pending: list[Token] = []

    def close(end: int) -> None:
        nonlocal start, pending
        body = [t for t in pending if t.token_type != TokenType.SEMICOLON]
        if body:
            used: dict[str, int] = {}
            pieces: list[str] = []
            at = start
            for dollar, number in itertools.pairwise(pending):
                if (
                    dollar.token_type == TokenType.PARAMETER
                    and dollar.text == "$"
                    and number.token_type == TokenType.NUMBER
                    and dollar.end + 1 == number.start
                    and number.text.isdigit()
                ):
                    index = used.setdefault(f"${int(number.text)}", len(used) + 1)
                    pieces += [code[at : dollar.start], f"${index}"]
                    at = number.end + 1
            pieces.append(code[at:end])
            result.append(
                Statement("".join(pieces), body[0].line, tuple(used), code[:start].count("\n") + 1)
            )
        start, pending = end, []

    for token in tokens:
        if token.token_type == TokenType.PLACEHOLDER or (
            token.token_type == TokenType.PARAMETER and token.text != "$"
        ):
            raise ArgumentsRejected(
                f"line {token.line}: placeholder {token.text!r}: "
                "declare parameters as `-- $1 name (type)` and use them as `$1`"
            )
        pending.append(token)
        if token.token_type == TokenType.SEMICOLON:
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


def _schema_of(value: Any) -> dict[str, Any]:
    """An untyped parameter's schema, taken from its default's JSON type."""
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, kind):
            return {"type": name}
    return {"type": "array"} if isinstance(value, list) else {}


def _flag(env: Mapping[str, str], key: str) -> bool:
    return env.get(key, "").strip().lower() in {"1", "true", "yes", "commit"}


class Plugin(LanguagePlugin):
    # A job's message names its database and carries its relay token, kept here for its
    # sandbox: a worker process has neither the databases nor this plugin's tokens.
    offloaded = False

    def __init__(self) -> None:
        self.databases: Mapping[str, DatabaseConfig] = {}
        self._relays: dict[str, Relay] = {}
        # Each job's relay token and the length of its longest statement, from its
        # message to its sandbox (`attach`).
        self._tokens: dict[str, tuple[str, int]] = {}

    def configure(self, databases: Mapping[str, DatabaseConfig]) -> None:
        self.databases = dict(databases)
        for name, config in sorted(databases.items()):
            if (shared := config.shared_role_warning(name)) is not None:
                log.warning("%s", shared)
        self._relays = {
            name: Relay(name, config)
            for name, config in databases.items()
            if config.kind == "postgresql"
        }

    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        declared = parameters(code) or parameters(code, postgres=True)
        properties: dict[str, Any] = {}
        for parameter in declared:
            schema = dict(_TYPES[parameter.type][1]) if parameter.type else {}
            if parameter.type is None and parameter.has_default:
                schema = _schema_of(parameter.default)
            if parameter.has_default:
                schema["default"] = parameter.default
            properties[parameter.name] = schema
        required = [p.name for p in declared if not p.has_default]
        return {"type": "object", "properties": properties, "required": required}

    def check_request(self, job: Job) -> None:
        """A database this server does not have is the request's error, not the job's."""
        try:
            self._database(job)
        except ArgumentsRejected as unknown:
            raise InvalidRequest(f"job.env[{DATABASE_VARIABLE!r}]", str(unknown)) from unknown

    def _database(self, job: Job) -> tuple[str, DatabaseConfig | None]:
        name = job.env.get(DATABASE_VARIABLE, "")
        if not name:
            return "", None
        if name not in self.databases:
            known = ", ".join(sorted(self.databases)) or "none"
            raise ArgumentsRejected(f"unknown database {name!r} (this server has: {known})")
        return name, self.databases[name]

    def job_message(self, job: Job, source_path: str) -> bytes:
        _name, database = self._database(job)
        postgres = database is not None and database.kind == "postgresql"
        try:
            listed = parameters(job.code, postgres)
            split = postgres_statements(job.code) if postgres else statements(job.code)
        except (InvalidRequest, TokenError) as error:
            if isinstance(error, InvalidRequest) and not isinstance(error.__cause__, TokenError):
                raise ArgumentsRejected(str(error)) from error
            # Text that does not tokenize (an unterminated string): the database reads it
            # whole and reports the error itself, in its own words.
            listed, split = [], [Statement(job.code, 1, ())]
        declared = {p.name: p for p in listed}
        by_position = {f"${p.position}": p.name for p in listed}
        for statement in split:
            for used in statement.names:
                if (by_position.get(used) if postgres else used) not in declared:
                    shown, form = (
                        (used, f"-- {used} name") if postgres else (f":{used}", f"-- :{used}")
                    )
                    raise ArgumentsRejected(
                        f"line {statement.line}: placeholder {shown} is not declared "
                        f"(add a `{form} (type)` comment)"
                    )
        unknown = sorted(set(job.args) - set(declared))
        if unknown:
            raise ArgumentsRejected(f"unknown argument {unknown[0]!r}")
        values: dict[str, Any] = {}
        for parameter_name, parameter in declared.items():
            if parameter_name in job.args:
                values[parameter_name] = _check(parameter, job.args[parameter_name])
            elif parameter.has_default:
                values[parameter_name] = _check(parameter, parameter.default)
            else:
                raise ArgumentsRejected(f"missing argument {parameter_name!r}")
        message: dict[str, Any] = {
            "statements": [
                {
                    "sql": s.sql,
                    "line": s.line,
                    "start_line": s.start_line,
                    "names": [by_position[u] for u in s.names] if postgres else list(s.names),
                }
                for s in split
            ],
            "params": values,
            "types": {n: p.kind for n, p in declared.items()},
            "results": "all" if job.env.get(RESULTS_VARIABLE, "") == "all" else "last",
            "commit": _flag(job.env, COMMIT_VARIABLE),
        }
        if database is not None and database.kind == "sqlite":
            file_name = PurePosixPath(database.path).name
            message["database"] = f"{JAIL_DATABASE_DIR}/{file_name}"
        if postgres:
            token = secrets.token_hex(16)
            self._tokens[job.id] = (token, max((len(s.sql) for s in split), default=0))
            message["relay"] = {"socket": f"{JAIL_DATABASE_DIR}/{RELAY_SOCKET}", "token": token}
        return json.dumps(message).encode()

    @contextlib.asynccontextmanager
    async def attach(self, job: Job) -> AsyncIterator[Sequence[BindMount]]:
        prepared = self._tokens.pop(job.id, None)
        name, database = self._database(job)
        if database is None:
            yield ()
        elif database.kind == "sqlite":
            # The database's folder, so that SQLite's journal can sit beside it.
            parent = str(PurePosixPath(database.path).parent)
            yield (BindMount(parent, JAIL_DATABASE_DIR, writable=True),)
        else:
            if prepared is None:
                raise ArgumentsRejected("the job's message was not prepared for its database")
            commit = _flag(job.env, COMMIT_VARIABLE)
            async with self._relays[name].serve(job, *prepared, commit) as served:
                yield (BindMount(str(served), JAIL_DATABASE_DIR),)
