"""What a PostgreSQL job may send the relay, checked before anything runs: each request
line, a statement's text and values, and the statement read with PostgreSQL's own
grammar (libpg_query, through pglast). Every byte is the job's (its wrapper is its own
code), so anything else is `Refused` and ends the run."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

from pglast import parser as pg_parser
from psycopg.types.json import Jsonb

NOT_TEXT = "a statement or value is not Unicode text without NUL characters"


class Refused(Exception):
    """A request the relay does not run: the job's run ends there, rolled back."""

    def __init__(self, name: str, message: str, position: int = 0, sqlstate: str = "") -> None:
        super().__init__(message)
        self.reply = {
            "name": name,
            "message": message,
            "sqlstate": sqlstate,
            "position": position,
            "detail": "",
        }


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    """The protobuf varint at `at`, and where the next field starts."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


_FIXED_BYTES = {1: 8, 5: 4}
"""The sizes of protobuf's fixed-width wire types (a double, a 32-bit float)."""


def _fields(message: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """The fields of one protobuf message, nothing inside them decoded: (number, a
    varint's value or a length-delimited field's bytes); fixed-width ones are skipped."""
    at = 0
    while at < len(message):
        key, at = _varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(message, at)
            yield number, value
        elif wire == 2:
            size, at = _varint(message, at)
            yield number, message[at : at + size]
            at += size
        else:
            at += _FIXED_BYTES[wire]


def _statements(sql: str) -> list[memoryview]:
    """The first two statements PostgreSQL's grammar (libpg_query, through pglast) reads
    in `sql` (a second is refused, whatever it is): each a `RawStmt` of pg_query.proto
    (`ParseResult.stmts`, field 2). Only the fields the relay looks at are read: decoding
    the whole tree costs ten times the parse, and it recurses as deep as the statement
    nests (past Python's limit at some 500 terms of `1+1+...`, which PostgreSQL runs)."""
    tree = memoryview(pg_parser.parse_sql_protobuf(sql))
    found = (v for number, v in _fields(tree) if number == 2 and isinstance(v, memoryview))
    return list(itertools.islice(found, 2))


def _head(statement: memoryview) -> tuple[int, int]:
    """A `RawStmt`'s node type (the field number of its `Node`, a oneof) and that node's
    field 1 when it is a varint (a `TransactionStmt`'s kind), else 0."""
    node = next(value for number, value in _fields(statement) if number == 1)
    assert isinstance(node, memoryview)
    node_type, fields = next(_fields(node))
    assert isinstance(fields, memoryview)
    first = next((value for number, value in _fields(fields) if number == 1), 0)
    return node_type, first if isinstance(first, int) else 0


# Field numbers of node types differ between libpg_query's versions: read off the grammar.
_TRANSACTION_STMT = _head(_statements("COMMIT")[0])[0]
_OWN_TRANSACTION_CONTROL = {
    _head(_statements(sql)[0])[1] for sql in ("SAVEPOINT s", "RELEASE s", "ROLLBACK TO s")
}
"""What PostgreSQL's grammar calls transaction control that a job may use: savepoints."""


def check_statement(sql: str) -> None:
    """Refuses what PostgreSQL's own grammar reads as more than one statement or as
    transaction control other than a savepoint's. Text it cannot read is refused as the
    syntax error it is: the relay sends only what it read."""
    try:
        found = _statements(sql)
    except pg_parser.ParseError as error:
        message, at = error.args
        position = len(sql) + 1 if at is None else int(at) + 1
        raise Refused("SyntaxError", str(message), position, "42601") from None
    if len(found) > 1:
        location = dict(_fields(found[1])).get(2, 0)  # RawStmt.stmt_location
        raise Refused(
            "SyntaxError",
            "a request is one statement (PostgreSQL's extended protocol runs no more)",
            (location if isinstance(location, int) else 0) + 1,
            "42601",
        )
    node_type, kind = _head(found[0]) if found else (0, 0)
    if node_type == _TRANSACTION_STMT and kind not in _OWN_TRANSACTION_CONTROL:
        raise Refused(
            "TransactionControl",
            "a job cannot begin or end its transaction: it is committed when the request "
            "asks for it (SQL_COMMIT=1), else rolled back",
        )


def request_line(line: bytes) -> dict[str, Any]:
    """One request line as a JSON object, else the run's `ProtocolError`."""
    if not line.endswith(b"\n"):
        raise Refused("ProtocolError", "the connection closed before the job's end")
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        raise Refused("ProtocolError", "a request is not a line of JSON") from None
    if not isinstance(request, dict):
        raise Refused("ProtocolError", "a request is a JSON object")
    return request


def _is_unicode(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (JSON's escapes can make lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def statement(request: dict[str, Any]) -> tuple[str, list[Any]]:
    """A statement request's text and bound values, checked."""
    if set(request) != {"sql", "params", "types"}:
        raise Refused("ProtocolError", 'a request is {"sql", "params", "types"} or {"end": true}')
    sql, values, kinds = request["sql"], request["params"], request["types"]
    if not (
        isinstance(sql, str)
        and isinstance(values, list)
        and isinstance(kinds, list)
        and len(values) == len(kinds)
        and all(isinstance(k, str) and k in _KINDS for k in kinds)
    ):
        raise Refused("ProtocolError", "a statement is text with one known type per value")
    if "\0" in sql or not _is_unicode(sql):
        # libpq and libpg_query read a C string: a NUL would end the text each one saw.
        raise Refused("ProtocolError", NOT_TEXT)
    try:
        return sql, [_bind(v, k) for v, k in zip(values, kinds, strict=True)]
    except (TypeError, ValueError):
        raise Refused("ProtocolError", "a blob value is not base64 text") from None


def _bind(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "blob":
        return base64.b64decode(value, validate=True)
    if kind == "json" or isinstance(value, dict | list):
        return Jsonb(value)
    return value


_KINDS = {"integer", "number", "text", "boolean", "json", "blob", "any"}
