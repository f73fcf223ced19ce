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

import base64
import json
import os
import sqlite3
import sys

RESULT_FD = 3
JOB_FD = 4
SOURCE_NAME = "main.sql"
# A fresh, empty database per job unless the message names a file mounted for it.
DEFAULT_DATABASE = "/tmp/gristmill.sqlite"
# The service's result channel holds 64 MiB; past it the rows are streamed straight
# to fd 3 so that the service stops the job with OUTPUT_LIMIT instead of the wrapper
# holding ten million rows in memory.
RESULT_CAP = 64 * 1024 * 1024


def _authorizer(action, arg1, arg2, database, trigger):
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _value(value):
    """One SQLite value as JSON: integers exact, text, real, null; blobs as base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None if value != value else str(value)
    return value


def _bind(value, kind):
    """A parameter's JSON value as SQLite wants it, by its declared type."""
    if value is None:
        return None
    if kind == "blob":
        return base64.b64decode(value, validate=True)
    if kind == "json" or isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return int(value)
    return value


class _Channel:
    """The result, kept as encoded chunks; streamed to fd 3 once it passes the cap."""

    def __init__(self):
        self.size = 0
        self.streaming = False

    def rows(self, cursor):
        names = [d[0] for d in cursor.description]
        chunks = []
        for row in cursor:
            text = json.dumps(
                {n: _value(v) for n, v in zip(names, row)}, ensure_ascii=False, allow_nan=False
            )
            chunks.append(text)
            self.size += len(text) + 2
            if self.size > RESULT_CAP:
                self._stream(chunks, cursor, names)
        return chunks

    def _stream(self, chunks, cursor, names):
        """Past the cap: write what there is and the rest as it comes, until stopped."""
        with os.fdopen(RESULT_FD, "w", encoding="utf-8", closefd=False) as out:
            out.write('{"result": [' + ", ".join(chunks))
            for row in cursor:
                out.write(", " + json.dumps({n: _value(v) for n, v in zip(names, row)}))
        os._exit(1)


def _error(error, statement, index):
    name = getattr(error, "sqlite_errorname", None) or type(error).__name__
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


def _write(payload_text):
    with os.fdopen(RESULT_FD, "w", encoding="utf-8", closefd=False) as out:
        out.write(payload_text)


def main():
    with os.fdopen(JOB_FD, "rb") as job:
        message = json.loads(job.read())
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
    # The whole job is one transaction: committed only when the request asked for it.
    commit = message.get("commit", False)
    connection.execute("BEGIN")
    for index, statement in enumerate(message["statements"]):
        try:
            cursor = connection.execute(
                statement["sql"], {n: params[n] for n in statement["names"]}
            )
            if cursor.description is not None:
                chunks = channel.rows(cursor)
                last = chunks
                if every:
                    results.append('{"rows": [' + ", ".join(chunks) + "]}")
            elif every:
                results.append(json.dumps({"rowcount": cursor.rowcount}))
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.rollback()
            _write(json.dumps(_error(error, statement, index)))
            return
    if connection.in_transaction:
        if commit:
            connection.commit()
        else:
            connection.rollback()
    connection.close()
    if every:
        _write('{"result": [' + ", ".join(results) + "]}")
    else:
        _write('{"result": [' + ", ".join(last or []) + "]}")


if __name__ == "__main__":
    sys.exit(main())
