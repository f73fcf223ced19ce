"""gristmill's SQL wrapper: runs a job's SQLite statements, per runtimes/PROTOCOL.md.

The service (runtimes/sql/language.py) has already parsed the script: it split the
statements with a real tokenizer and SQLite's own `complete_statement`, checked every
placeholder against the declared parameters and typed the values. This file, run by
Debian's /usr/bin/python3 inside the job's sandbox, only opens the job's own database,
binds the values as real parameters (never spliced into the text), executes the
statements in order and writes the rows on fd 3. Standard library only.

Isolation beyond the sandbox's: `ATTACH` is refused by an authorizer and by
SQLITE_LIMIT_ATTACHED = 0, extension loading is never enabled (`load_extension()`
then fails), so a job sees only its own database file.
"""

import os
import sqlite3
import sys

try:
    # The C accelerator behind `json`, used directly: `import json` also imports `re`
    # and `enum`, milliseconds of every job (as in runtimes/python/wrapper.py).
    from _json import encode_basestring, make_encoder, make_scanner
except ImportError:  # an interpreter built without it: `json` itself
    make_scanner = make_encoder = None

RESULT_FD = 3
JOB_FD = 4
SOURCE_NAME = "main.sql"
# A fresh, empty database per job unless the message names a file mounted for it.
DEFAULT_DATABASE = "/tmp/gristmill.sqlite"
# The service's result channel holds 64 MiB; past it the rows are streamed straight
# to fd 3 so that the service stops the job with OUTPUT_LIMIT instead of the wrapper
# holding ten million rows in memory.
RESULT_CAP = 64 * 1024 * 1024


# Extended result codes Python 3.11's table lacks (sqlite3.h), then the primary codes.
_EXTENDED = {2835: "SQLITE_CONSTRAINT_PINNED", 3091: "SQLITE_CONSTRAINT_DATATYPE"}
_PRIMARY = {
    1: "SQLITE_ERROR",
    5: "SQLITE_BUSY",
    7: "SQLITE_NOMEM",
    13: "SQLITE_FULL",
    18: "SQLITE_TOOBIG",
    19: "SQLITE_CONSTRAINT",
    20: "SQLITE_MISMATCH",
    23: "SQLITE_AUTH",
}


class _DecoderSettings:
    """What a default `json.JSONDecoder` hands the C scanner."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(lambda name: {"NaN": float("nan")}.get(name, float(name)))


def _loads(data):
    """`json.loads(data)` for the UTF-8 text the service sends."""
    if make_scanner is not None:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        stripped = text.strip()
        value, end = make_scanner(_DecoderSettings())(stripped, 0)
        if end == len(stripped):
            return value
    import json

    return json.loads(data)


def _not_serializable(value):
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _dumps(value):
    """`json.dumps(value, ensure_ascii=False, allow_nan=False)`."""
    if make_encoder is None:
        import json

        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    encode = make_encoder(
        {}, _not_serializable, encode_basestring, None, ": ", ", ", False, False, False
    )
    return "".join(encode(value, 0))


def _authorizer(action, arg1, arg2, database, trigger):
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _authorizer_in_transaction(action, arg1, arg2, database, trigger):
    """A named database's job is one transaction that only the service ends: BEGIN,
    COMMIT and ROLLBACK (but to a savepoint) are refused too."""
    if action == sqlite3.SQLITE_TRANSACTION:
        return sqlite3.SQLITE_DENY
    return _authorizer(action, arg1, arg2, database, trigger)


def _value(value):
    """One SQLite value as JSON: integers exact, text, real, null; blobs as base64."""
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def _bind(value, kind):
    """A parameter's JSON value as SQLite wants it, by its declared type."""
    if value is None:
        return None
    if kind == "blob":
        import base64

        return base64.b64decode(value, validate=True)
    if kind == "json" or isinstance(value, (dict, list)):
        return _dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


class _Channel:
    """The result as encoded JSON bytes; streamed to fd 3 once it passes the cap."""

    def __init__(self):
        self.size = 0

    def collect(self, pieces):
        """The bytes of a JSON list from `pieces`, each the encoding of one or more of
        its items (comma-separated)."""
        out = bytearray(b"[")
        pieces = iter(pieces)
        for piece in pieces:
            if len(out) > 1:
                out += b", "
            out += piece
            if self.size + len(out) > RESULT_CAP:
                self._stream(out, pieces)
        out += b"]"
        self.size += len(out)
        return bytes(out)

    def rows(self, cursor):
        """The rows of a SQLite cursor as the bytes of a JSON list of objects."""
        names = [d[0] for d in cursor.description]
        return self.collect(
            _encode({n: _value(v) for n, v in zip(names, row, strict=True)}) for row in cursor
        )

    def _stream(self, out, pieces):
        """Past the cap: write what there is and the rest as it comes, until stopped."""
        _write_all(b'{"result": ' + out)
        for piece in pieces:
            _write_all(b", " + piece)
        os._exit(1)


def _encode(value):
    return _dumps(value).encode("utf-8")


def _write_all(data):
    view = memoryview(data)
    while view:
        view = view[os.write(RESULT_FD, view) :]


def _error(error, statement, index):
    name = getattr(error, "sqlite_errorname", None) or type(error).__name__
    if name == "unknown":  # an extended code newer than this Python's table
        code = getattr(error, "sqlite_errorcode", 0)
        name = _EXTENDED.get(code) or _PRIMARY.get(code & 0xFF, type(error).__name__)
    first = statement["sql"].strip().splitlines()[0] if statement["sql"].strip() else ""
    return {
        "error": {
            "name": name,
            "message": str(error),
            "stack": [
                {
                    "file": SOURCE_NAME,
                    "line": statement["line"],
                    "function": f"statement {index + 1}",
                    "text": first[:200],
                }
            ],
        },
        "verdict": "ERROR",
    }


def _write(payload):
    _write_all(payload if isinstance(payload, bytes) else payload.encode("utf-8"))


class _RelayRows:
    """A relayed statement's rows: chunks of encoded rows, then the statement's end."""

    def __init__(self, relay):
        self.relay = relay
        self.done = None

    def __iter__(self):
        while True:
            reply = self.relay.receive()
            if "chunk" in reply:
                yield self.relay.read_exactly(reply["chunk"])
            else:
                self.done = reply
                return


class _Relay:
    """The service's relay to a PostgreSQL database, on the Unix socket mounted for the
    job: one JSON line per request and per reply (runtimes/sql/relay.py)."""

    def __init__(self, path, token):
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.lines = self.sock.makefile("rb")
        self.send({"token": token})

    def send(self, message):
        self.sock.sendall(_dumps(message).encode("utf-8") + b"\n")

    def read_exactly(self, size):
        data = self.lines.read(size)
        if len(data) != size:
            raise ConnectionError("the database relay closed the connection")
        return data

    def receive(self):
        line = self.lines.readline()
        if not line:
            raise ConnectionError("the database relay closed the connection")
        return _loads(line)


class DatabaseError(Exception):
    """An error the database reported, with its own name, words and position."""

    def __init__(self, error):
        super().__init__(error.get("message", ""))
        self.error = error


def _postgres_error(error, statement, index):
    """The database's error, at its line in the user's script when it gave a position."""
    sql, position = statement["sql"], error.get("position") or 0
    line = statement["line"]
    if position:
        line = statement.get("start_line", line) + sql[: position - 1].count("\n")
    message = error.get("message", "")
    if error.get("sqlstate"):
        message += f" (SQLSTATE {error['sqlstate']})"
    if error.get("detail"):
        message += f"\n{error['detail']}"
    text = sql.strip().splitlines()[0] if sql.strip() else ""
    return {
        "error": {
            "name": error.get("name") or "DatabaseError",
            "message": message,
            "stack": [
                {
                    "file": SOURCE_NAME,
                    "line": line,
                    "function": f"statement {index + 1}",
                    "text": text[:200],
                }
            ],
        },
        "verdict": "ERROR",
    }


def run_postgres(message):
    relay = _Relay(message["relay"]["socket"], message["relay"]["token"])
    ready = relay.receive()
    if "error" in ready:
        _write(_dumps(_postgres_error(ready["error"], message["statements"][0], 0)))
        return
    kinds = message.get("types", {})
    every = message.get("results") == "all"
    channel = _Channel()
    results, last = [], None
    for index, statement in enumerate(message["statements"]):
        names = statement["names"]
        relay.send(
            {
                "sql": statement["sql"],
                "params": [message["params"][n] for n in names],
                "types": [kinds.get(n, "any") for n in names],
            }
        )
        reply = relay.receive()
        if "columns" in reply:
            rows = _RelayRows(relay)
            encoded = channel.collect(rows)
            reply = rows.done
            if "error" not in reply:
                last = encoded
                if every:
                    results.append(b'{"rows": ' + encoded + b"}")
        elif "done" in reply and every:
            results.append(_encode({"rowcount": reply["done"]}))
        if "error" in reply:
            _write(_dumps(_postgres_error(reply["error"], statement, index)))
            return
    relay.send({"end": True})
    ended = relay.receive()
    if "error" in ended:  # e.g. a deferred constraint, checked at the commit
        index = len(message["statements"]) - 1
        _write(_dumps(_postgres_error(ended["error"], message["statements"][index], index)))
        return
    if every:
        _write(b'{"result": [' + b", ".join(results) + b"]}")
    else:
        _write(b'{"result": ' + (last or b"[]") + b"}")


def _end(connection, commit):
    """The service's end of the job's transaction (the job's own is refused)."""
    connection.set_authorizer(_authorizer)
    if connection.in_transaction:
        if commit:
            connection.commit()
        else:
            connection.rollback()


def _after_context(data):
    """The job message after the context variables that head it (`NAME=value`, each ended
    by a NUL byte, then a lone NUL): SQL has no environment to set them in."""
    start = 0
    while (end := data.index(b"\0", start)) != start:
        start = end + 1
    return data[start + 1 :]


def main():
    with os.fdopen(JOB_FD, "rb") as job:
        message = _loads(_after_context(job.read()))
    if "relay" in message:
        return run_postgres(message)
    path = message.get("database") or DEFAULT_DATABASE
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    connection.set_authorizer(_authorizer)
    kinds = message.get("types", {})
    params = {name: _bind(value, kinds.get(name)) for name, value in message["params"].items()}
    every = message.get("results") == "all"
    channel = _Channel()
    results = []
    last = None
    # A database that outlives the job: the whole job is one transaction, committed only
    # when the request asked for it. A fresh one dies with the job: statements run as
    # they come (so VACUUM works too).
    commit = message.get("commit", False)
    if message.get("database"):
        connection.execute("BEGIN")
        connection.set_authorizer(_authorizer_in_transaction)
    for index, statement in enumerate(message["statements"]):
        try:
            cursor = connection.execute(
                statement["sql"], {n: params[n] for n in statement["names"]}
            )
            if cursor.description is not None:
                last = channel.rows(cursor)
                if every:
                    results.append(b'{"rows": ' + last + b"}")
            elif every:
                results.append(_encode({"rowcount": cursor.rowcount}))
        except sqlite3.Error as error:
            _end(connection, commit=False)
            _write(_dumps(_error(error, statement, index)))
            return
    _end(connection, commit)
    connection.close()
    if every:
        _write(b'{"result": [' + b", ".join(results) + b"]}")
    else:
        _write(b'{"result": ' + (last or b"[]") + b"}")


if __name__ == "__main__":
    sys.exit(main())
