"""The service's side of a PostgreSQL job: a statement-level relay on a Unix socket.

The job's wrapper, in its sandbox without network, connects to a socket the service
mounts into the sandbox and sends one JSON line per request; the service executes the
statements with psycopg on a connection it opened with the configured DSN and role,
so the credentials never enter the sandbox. Line protocol (UTF-8 JSON, one per line):

    job -> {"token": "..."}                         first: the token from its message
    job -> {"sql": "...", "params": [...], "types": [...]}
    relay -> {"columns": [...]}, then per batch {"chunk": n} and n bytes of rows already
             encoded as JSON objects, then {"done": rowcount}
    job -> {"end": true}                            every statement succeeded
    relay -> {"ended": "committed" | "rolled back"}
    relay -> {"error": {"name", "message", "sqlstate", "position", "detail"},
              "ended": "committed" | "rolled back"}        the run is over, at any point

The job's whole run is one transaction: rolled back unless the request asked to commit
(`SQL_COMMIT`, read by the service from the request, never from the sandbox), and
never committed unless every statement succeeded and the job asked for its end. The
wrapper is the job's own code (a job can replace it), so every byte on the socket is
taken as hostile: a request must be one line of the protocol, its statement no longer
than the job's longest, else the run ends (`ProtocolError`); a statement is read with
PostgreSQL's own grammar (libpg_query) and refused unless it is exactly one statement
and not transaction control (a savepoint's is the job's own); it runs through the
extended query protocol, where the server too refuses more than one. Independent of any
parsing, before every statement and before the end the relay checks that the
transaction open is still the one it began (its transaction id, taken once the job has
written); one a statement left ends the run,
and the report says what became of it (`pg_xact_status`). Each statement's
`statement_timeout` is the job's remaining time; when the job ends for any reason
(timeout, cancel, a limit) a query still running is cancelled on the server (the
protocol's cancel request, as `pg_cancel_backend`) and its connection closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import decimal
import hmac
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from gristmill.languages import ConfigError, DatabaseConfig, Job

from .statements import NOT_TEXT, Refused, check_statement, request_line, statement

log = logging.getLogger(__name__)

SOCKET_NAME = "relay.sock"
IDLE = TransactionStatus.IDLE
INTRANS = TransactionStatus.INTRANS
BATCH_ROWS = 1000
TIMEOUT_MARGIN_MS = 1000
RELEASE_WAIT_S = 5.0
"""How long a job's end waits for its connection's return to the pool (a rollback and a
`DISCARD ALL`) before it closes the connection instead."""
LINE_LIMIT = 64 * 1024 * 1024
"""The longest request line the relay reads (a statement with its values)."""
THREAD_PARSE_CHARS = 256 * 1024
"""Statements longer than this are parsed on a thread: below it the thread's round trip
costs more than the parse."""


def to_json(value: Any) -> Any:
    """A value psycopg loaded, as JSON: numbers exact (numeric as a string), dates and
    times as ISO-8601, json/jsonb as JSON, bytes as base64, anything else as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | memoryview | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, uuid.UUID | datetime.timedelta):
        return str(value)
    return str(value)


_GUARD = (
    "select pg_catalog.pg_current_xact_id_if_assigned(),"
    " pg_catalog.set_config('statement_timeout', $1, true)"
)
"""Run before every statement and before the end: the job's transaction id once it has
written (a transaction begun since has another, or none yet) and the statement's
timeout. Schema-qualified, so that a job's own `public.set_config` is never what runs.
Never assigning an id: a read-only job costs none, and a hot standby serves jobs too."""


def _error(error: psycopg.Error) -> dict[str, Any]:
    diag = error.diag
    position = diag.statement_position
    return {
        "name": type(error).__name__,
        "message": diag.message_primary or str(error),
        "sqlstate": error.sqlstate or "",
        "position": int(position) if position and position.isdigit() else 0,
        "detail": diag.message_detail or "",
    }


class Relay:
    """One configured PostgreSQL database: at most `pool_size` jobs connected at once, and
    at most `pool_size` connections open, each of one role (a tenant's, with `{tenant}`
    in the configured role) and never lent to a job of another."""

    def __init__(self, name: str, config: DatabaseConfig) -> None:
        self.name = name
        self.config = config
        self._slots = asyncio.Semaphore(config.pool_size)
        # Connections a finished job left clean, reused by the next (`release`), oldest
        # first; and how many connections jobs hold now.
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._held = 0

    async def acquire(self, role: str) -> psycopg.AsyncConnection[Any]:
        """An idle connection of `role` when one is healthy, else a new one, which takes
        the place of the oldest idle connection (another role's) when the pool is full."""
        while (connection := self._take(role)) is not None:
            if not connection.closed and connection.info.transaction_status == IDLE:
                self._held += 1
                return connection
            with contextlib.suppress(psycopg.Error):
                await connection.close()
        if self._idle and self._held + len(self._idle) >= self.config.pool_size:
            with contextlib.suppress(psycopg.Error):
                await self._idle.pop(0).close()
        connection = await self.connect(role)
        self._held += 1
        return connection

    def _take(self, role: str) -> psycopg.AsyncConnection[Any] | None:
        """The idle connection of `role` returned last (or one that has closed)."""
        for index in range(len(self._idle) - 1, -1, -1):
            connection = self._idle[index]
            if connection.closed or not self.config.per_tenant or connection.info.user == role:
                return self._idle.pop(index)
        return None

    async def release(self, connection: psycopg.AsyncConnection[Any], reusable: bool) -> None:
        """Back to the pool with nothing of the job left (its transaction rolled back,
        then `DISCARD ALL`: settings, role, temporary tables, prepared statements, advisory
        locks, listeners); closed instead when the job ended mid-query or anything fails."""
        self._held -= 1
        try:
            await connection.rollback()
            if reusable and len(self._idle) < self.config.pool_size:
                await connection.set_autocommit(True)
                await connection.execute("DISCARD ALL")
                await connection.set_autocommit(False)
                self._idle.append(connection)
                return
        except psycopg.Error:
            pass
        except asyncio.CancelledError:
            # Cut off half-way, the session may still hold what the job left (its advisory
            # locks): it ends here, not whenever the garbage collector gets to it.
            with contextlib.suppress(psycopg.Error):
                await connection.close()
            raise
        with contextlib.suppress(psycopg.Error):
            await connection.close()

    async def connect(self, role: str) -> psycopg.AsyncConnection[Any]:
        """A connection as `role` ("": the DSN's user); a failure names the database,
        never the DSN (which may hold a password)."""
        extra = {"user": role} if role else {}
        try:
            return await psycopg.AsyncConnection.connect(
                psycopg.conninfo.make_conninfo(
                    self.config.dsn, application_name="gristmill-job", **extra
                ),
                autocommit=False,
            )
        except psycopg.Error as error:
            reason = type(error).__name__
            raise ConnectionError(f"database {self.name!r} cannot be reached ({reason})") from None

    @contextlib.asynccontextmanager
    async def serve(self, job: Job, token: str, longest: int, commit: bool) -> AsyncIterator[Path]:
        """A folder holding the job's socket, served until the job has ended. `longest` is
        the length of the longest of the job's statements as the service split its code:
        a request's may be no longer, so that what a job makes the relay parse is bounded
        by what the service has read already (an 8 MB select list took 12 s of the event
        loop and 1.3 GB)."""
        # A short path (a socket's is at most 107 bytes), searchable by the jail's user.
        folder = Path(tempfile.mkdtemp(prefix="gm-sql-"))
        os.chmod(folder, 0o711)  # noqa: PTH101 (a blocking call either way; microseconds)
        deadline = time.monotonic() + job.limits.wall_time_ms / 1000
        if job.deadline is not None:
            deadline = min(deadline, job.deadline)
        session = _Session(self, token, longest, commit, deadline, job.tenant)
        server = await asyncio.start_unix_server(
            session.handle, path=str(folder / SOCKET_NAME), limit=LINE_LIMIT
        )
        os.chmod(folder / SOCKET_NAME, 0o666)  # noqa: PTH101
        try:
            yield folder
        finally:
            server.close()
            await session.stop()
            shutil.rmtree(folder, ignore_errors=True)


class _Session:
    """One job's connection: opened when the job's wrapper connects, closed at the end."""

    def __init__(
        self, relay: Relay, token: str, longest: int, commit: bool, deadline: float, tenant: str
    ) -> None:
        self.relay = relay
        self.tenant = tenant
        self.token = token
        self.longest = longest
        self.commit = commit
        self.deadline = deadline
        self.connection: psycopg.AsyncConnection[Any] | None = None
        self.running = False
        self.task: asyncio.Task[None] | None = None
        self.served = False
        # Whether the job's transaction has begun (at the first `_guard`), and its id
        # once it has written.
        self.began = False
        self.xid: str | None = None
        # Whether the connection may serve another job: not when a query was cut off.
        self.reusable = True
        # The conversation is over and its connection on its way back to the pool.
        self.releasing = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.served:  # one connection per job, the first
            writer.close()
            return
        self.served = True
        self.task = asyncio.current_task()
        try:
            try:
                await self._converse(reader, writer)
            except Refused as refused:
                await self._end_with(writer, refused.reply)
            except psycopg.Error as error:
                await self._end_with(writer, _error(error))
            except ConnectionError as error:  # from `acquire`: the database cannot be reached
                await self._end_with(writer, {"name": "DatabaseUnavailable", "message": str(error)})
        except asyncio.CancelledError:
            # `stop` ended the job's conversation: nothing is left to answer. (Ending the
            # task normally keeps asyncio's stream callback from logging the cancel.)
            pass
        finally:
            await self._close()
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = request_line(await _line(reader))
        token = hello.get("token")
        if set(hello) != {"token"} or not isinstance(token, str):
            raise Refused("ProtocolError", "the first request is the job's token")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Refused("ProtocolError", "the relay refused the connection")
        try:
            role = self.relay.config.role_for(self.tenant)
        except ConfigError as error:
            raise Refused("DatabaseUnavailable", str(error)) from None
        async with self.relay._slots:
            self.connection = await self.relay.acquire(role)
            await _send(writer, {"ready": self.relay.name})
            while True:
                request = request_line(await _line(reader))
                if set(request) == {"end"} and request["end"] is True:
                    await self._finish(writer)
                    return
                await self._execute(*statement(request), writer)

    async def _guard(self) -> None:
        """Refuses to go on unless the transaction open is the relay's: whatever text a
        statement was, one that ended the job's transaction (none is open) or replaced
        it (its id, taken once it wrote, is another's) ends the run. A transaction that
        ended before it wrote anything committed nothing. Also sets the timeout."""
        assert self.connection is not None
        status = self.connection.info.transaction_status
        # A backstop a little past the job's own end: the service stops the job at its
        # wall time (TIMEOUT) and cancels the query then; this bounds it if that fails.
        remaining_ms = max(int((self.deadline - time.monotonic()) * 1000), 1) + TIMEOUT_MARGIN_MS
        cursor = psycopg.AsyncRawCursor(self.connection)
        await cursor.execute(_GUARD, [f"{remaining_ms}ms"])
        row = await cursor.fetchone()
        xid = None if row is None or row[0] is None else str(row[0])
        left = self.began and (status != INTRANS or (self.xid is not None and xid != self.xid))
        self.began = True
        if left:
            self.reusable = False
            log.warning("database %r: a job's statement left its transaction", self.relay.name)
            raise Refused(
                "TransactionControl",
                "a statement ended the job's transaction: the job's run is over",
            )
        self.xid = xid

    async def _finish(self, writer: asyncio.StreamWriter) -> None:
        """The job's end: committed when the request asked for it, else rolled back."""
        assert self.connection is not None
        self.running = True
        try:
            await self._guard()
            if self.commit:
                await self.connection.commit()
            else:
                await self.connection.rollback()
        finally:
            self.running = False
        await _send(writer, {"ended": "committed" if self.commit else "rolled back"})

    async def _end_with(self, writer: asyncio.StreamWriter, error: dict[str, Any]) -> None:
        """Ends the run with `error`, rolled back, telling what became of the job's
        transaction: the server's own word (`pg_xact_status`) on the id the relay took."""
        ended = "rolled back"
        if self.connection is not None:
            try:
                await self.connection.rollback()
                if self.xid is not None:
                    cursor = psycopg.AsyncRawCursor(self.connection)
                    await cursor.execute("select pg_catalog.pg_xact_status($1)", [self.xid])
                    row = await cursor.fetchone()
                    await self.connection.rollback()
                    if row and row[0] == "committed":
                        ended = "committed"
            except psycopg.Error:
                # The session is gone (a cancel, a crash, pg_terminate_backend): the server
                # rolled back what was open, and the last guard saw the job's open.
                self.reusable = False
        with contextlib.suppress(ConnectionError):
            await _send(writer, {"error": error, "ended": ended})

    async def _execute(self, sql: str, params: list[Any], writer: asyncio.StreamWriter) -> None:
        assert self.connection is not None
        if len(sql) > self.longest:
            raise Refused(
                "ProtocolError",
                f"a statement of {len(sql)} characters; the job's longest is {self.longest}",
            )
        if len(sql) > THREAD_PARSE_CHARS:
            # libpg_query parses without the interpreter's lock: the event loop serves on.
            await asyncio.to_thread(check_statement, sql)
        else:
            check_statement(sql)
        cursor = psycopg.AsyncRawCursor(self.connection)
        try:
            self.running = True
            await self._guard()
            batch: list[dict[str, Any]] = []
            columns: list[str] | None = None
            try:
                async for row in cursor.stream(sql, params or None, size=BATCH_ROWS):
                    if columns is None:
                        columns = [c.name for c in cursor.description or ()]
                        await _send(writer, {"columns": columns})
                    batch.append({n: to_json(v) for n, v in zip(columns, row, strict=True)})
                    if len(batch) >= BATCH_ROWS:
                        await _send_rows(writer, batch)
                        batch = []
            except psycopg.ProgrammingError as error:
                # psycopg's word for a statement that ran and returns no rows (DDL, DML
                # without RETURNING): its results are consumed, the connection is idle.
                if "didn't produce a result" not in str(error):
                    raise
                await _send(writer, {"done": -1})
                return
            if columns is None:  # it returns rows, none this time: their names do not matter
                await _send(writer, {"columns": []})
            if batch:
                await _send_rows(writer, batch)
            await _send(writer, {"done": cursor.rowcount})
        except UnicodeEncodeError:  # a value psycopg could not encode (a lone surrogate)
            raise Refused("ProtocolError", NOT_TEXT) from None
        finally:
            self.running = False

    async def stop(self) -> None:
        """The job has ended: cancel a query still running, then close. A conversation
        that is over is waited for while it returns its connection (the job's end often
        comes first): cut off in its `DISCARD ALL`, it would leave the job's session open."""
        talking = self.task is not None and not self.task.done() and not self.releasing
        if self.running or talking:
            self.reusable = False
        if self.connection is not None and self.running:
            with contextlib.suppress(psycopg.Error):
                await self.connection.cancel_safe(timeout=5)
        if self.task is not None and not self.task.done():
            if talking:
                self.task.cancel()
            await asyncio.wait({self.task}, timeout=RELEASE_WAIT_S)
            self.task.cancel()  # a database that does not answer: the connection is closed
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self._close()

    async def _close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            self.releasing = True
            await self.relay.release(connection, self.reusable and not self.running)


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # asyncio's word for a line past the reader's limit
        raise Refused("ProtocolError", f"a request line is over {LINE_LIMIT} bytes") from None


async def _send_rows(writer: asyncio.StreamWriter, batch: list[dict[str, Any]]) -> None:
    """Rows as JSON objects, comma-separated, sent as they will stand in the result: a
    `{"chunk": size}` line, then that many bytes, which the job copies without reading."""
    encoded = json.dumps(batch, ensure_ascii=False, allow_nan=False)[1:-1].encode()
    await _send(writer, {"chunk": len(encoded)})
    writer.write(encoded)
    await writer.drain()


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, ensure_ascii=False, allow_nan=False).encode() + b"\n")
    await writer.drain()
