"""`Queue`: enqueue jobs, read them, wait for their outcomes and cancel them, from Python.

The same can be done in plain SQL from any client (`select gristmill.enqueue(...)`,
`select gristmill.cancel(id)`, `listen gristmill_done`): this class is a thin layer
over those, for programs that would rather not write it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import psycopg
from google.protobuf import json_format
from psycopg.types.json import Jsonb

from gristmill.model import JsonValue
from gristmill.queue.migrations import current_version, migrate
from gristmill.queue.records import JOB_COLUMNS, JobRecord
from gristmill.queue.tracing import current_traceparent
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["NewJob", "Queue", "WaitTimeout"]


class WaitTimeout(TimeoutError):
    """`Queue.wait` gave up before the job finished."""


class Queue:
    """A connection to the queue in PostgreSQL (`conninfo`: a libpq URL or key=value string)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn = psycopg.connect(conninfo, autocommit=True)

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def schema_version(self) -> int:
        """The newest migration applied (0 before any)."""
        return current_version(self._conn)

    def migrate(self) -> list[int]:
        """Brings the schema up to date; returns the versions applied."""
        return migrate(self.conninfo)

    def enqueue(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        job_id: str | None = None,
        entry_point: str = "",
        files: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        limits: pb.Limits | Mapping[str, Any] | None = None,
        lockfile: str | None = None,
        tenant: str = "",
        priority: int = 0,
        run_after: datetime | None = None,
        max_attempts: int = 5,
        tags: Sequence[str] = (),
        traceparent: str | None = None,
    ) -> str:
        """Queues a job and returns its id (a new UUIDv7 unless `job_id` is given).

        `traceparent` (W3C Trace Context; default: the current span's, when there is
        one) is the trace the job's spans join, the worker's and the server's; without
        either the job starts a trace of its own."""
        row = self._conn.execute(
            "select gristmill.enqueue(language => %s, code => %s, args => %s, files => %s,"
            " limits => %s, tenant => %s, priority => %s,"
            " run_after => coalesce(%s, now()), max_attempts => %s, id => %s,"
            " entry_point => %s, env => %s, lockfile => %s, tags => %s, traceparent => %s)",
            (
                language,
                code,
                Jsonb(dict(args or {})),
                Jsonb(dict(files or {})),
                Jsonb(_plain_limits(limits)),
                tenant,
                priority,
                run_after,
                max_attempts,
                job_id,
                entry_point,
                Jsonb(dict(env or {})),
                lockfile,
                list(tags),
                traceparent or current_traceparent(),
            ),
        ).fetchone()
        assert row is not None
        return str(row[0])

    def enqueue_many(self, jobs: Iterable[NewJob]) -> list[str]:
        """Queues many jobs in one transaction (COPY into a staging table, then one
        statement), which wakes the workers once; returns their ids in order."""
        with self._conn.transaction():
            self._conn.execute(_STAGING)
            with self._conn.cursor().copy(
                f"copy pg_temp.gristmill_batch ({', '.join(_BATCH_COLUMNS)}) from stdin"
            ) as copy:
                for n, job in enumerate(jobs):
                    copy.write_row((n, *job.row()))
            rows = self._conn.execute(
                "select gristmill.submit(array(select row(b.id, b.language, b.code,"
                " b.entry_point, b.args, b.files, b.env, b.limits, b.lockfile, b.tenant,"
                " b.priority, null, b.max_attempts, null, null, null, null, null, null, null,"
                " null, null, null, null, null, null, null, null, null, null, null,"
                " coalesce(b.run_after, now()), null, null, b.tags, b.traceparent)::gristmill.jobs"
                " from pg_temp.gristmill_batch b order by b.n))"
            ).fetchall()
        return [str(row[0]) for row in rows]

    def get(self, job_id: str) -> JobRecord | None:
        row = self._conn.execute(
            f"select {JOB_COLUMNS} from gristmill.job(%s)", (job_id,)
        ).fetchone()
        return JobRecord.from_row(row) if row else None

    def cancel(self, job_id: str) -> str | None:
        """Cancels a job: its state afterwards ('cancelling' while its worker stops it)."""
        row = self._conn.execute("select gristmill.cancel(%s)", (job_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state: the live queue counted (`scheduled` are queued
        jobs whose `run_after` is ahead), the finished ones (within the retention) from
        the write-backs' counters, never a count over the history."""
        rows = self._conn.execute(
            "select state, count(*) from gristmill.queue group by state"
            " union all"
            " select state, sum(n) from gristmill.finished_counts group by state"
        )
        return {str(state): int(count) for state, count in rows}

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobRecord:
        """The job once finished (done, failed or cancelled), woken by LISTEN/NOTIFY.

        Raises `WaitTimeout` when `timeout_s` passes first and `KeyError` for no such job.
        """
        end = None if timeout_s is None else time.monotonic() + timeout_s
        with psycopg.connect(self.conninfo, autocommit=True) as listener:
            listener.execute("listen gristmill_done")
            while True:
                # Read after LISTEN: a job finishing in between is not missed.
                job = self.get(job_id)
                if job is None:
                    raise KeyError(job_id)
                if job.finished:
                    return job
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeout(f"job {job_id} is still {job.state}")
                # Re-read at least every few seconds: a notification lost with a
                # reconnection must not leave the caller waiting forever.
                pause = 5.0 if left is None else min(5.0, left)
                for note in listener.notifies(timeout=pause):
                    if job_id in note.payload.split(" "):
                        break


@dataclass(frozen=True)
class NewJob:
    """A job for `Queue.enqueue_many` (the arguments of `Queue.enqueue`)."""

    language: str
    code: str
    args: Mapping[str, JsonValue] = field(default_factory=dict)
    job_id: str | None = None
    entry_point: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    limits: pb.Limits | Mapping[str, Any] | None = None
    lockfile: str | None = None
    tenant: str = ""
    priority: int = 0
    run_after: datetime | None = None
    max_attempts: int = 5
    tags: Sequence[str] = ()
    traceparent: str | None = None  # default: the current span's, if any

    def row(self) -> tuple[object, ...]:
        """Its values in `_BATCH_COLUMNS` order (after `n`), JSON as text for COPY."""
        return (
            self.job_id,
            self.language,
            self.code,
            self.entry_point,
            json.dumps(dict(self.args)),
            json.dumps(dict(self.files)),
            json.dumps(dict(self.env)),
            json.dumps(_plain_limits(self.limits)),
            self.lockfile,
            self.tenant,
            self.priority,
            self.run_after,
            self.max_attempts,
            list(self.tags),
            self.traceparent or current_traceparent(),
        )


_BATCH_COLUMNS = (
    "n",
    "id",
    "language",
    "code",
    "entry_point",
    "args",
    "files",
    "env",
    "limits",
    "lockfile",
    "tenant",
    "priority",
    "run_after",
    "max_attempts",
    "tags",
    "traceparent",
)

_STAGING = """
create temporary table if not exists gristmill_batch (
    n integer, id text, language text, code text, entry_point text, args jsonb, files jsonb,
    env jsonb, limits jsonb, lockfile text, tenant text, priority integer,
    run_after timestamptz, max_attempts integer, tags text[],
    traceparent text
) on commit delete rows
"""


def _plain_limits(limits: pb.Limits | Mapping[str, Any] | None) -> dict[str, Any]:
    """Limits as JSON with integers (MessageToDict writes 64-bit ones as strings)."""
    if isinstance(limits, pb.Limits):
        limits = json_format.MessageToDict(limits, preserving_proto_field_name=True)
    plain: dict[str, Any] = {}
    for name, value in (limits or {}).items():
        plain[name] = value if isinstance(value, bool) else int(value)
    return plain
