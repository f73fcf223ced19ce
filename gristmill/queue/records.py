"""Between a row of `gristmill.jobs` and the contract's messages.

A queued row becomes an `ExecuteRequest` whose job id is the row's id (the server's
idempotency key); an `Outcome` becomes the values of the row's outcome columns, with
stdout and stderr cut to a bounded excerpt (their tails: where errors usually are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from google.protobuf import json_format

from gristmill.client import execute_request
from gristmill.v1 import runtime_pb2 as pb

__all__ = [
    "FINISHED_STATES",
    "JOB_COLUMNS",
    "JobRecord",
    "OutcomeColumns",
    "excerpt",
    "execute_arguments",
    "outcome_columns",
    "request_for",
]

FINISHED_STATES = frozenset({"done", "failed", "cancelled"})

_MS = timedelta(milliseconds=1)

JOB_COLUMNS = (
    "id, language, code, entry_point, args, files, env, limits, lockfile, tenant, priority,"
    " attempts, max_attempts, state, lease_token, retries, last_error, cancel_requested,"
    " enqueued_at, started_at, finished_at, verdict, result, error, stdout, stderr,"
    " exit_code, usage, outcome_lockfile, detail, uid, tags, traceparent"
)


@dataclass(frozen=True)
class JobRecord:
    """One row of `gristmill.jobs` (a view over the live queue and the history): the job,
    where it stands, and its outcome when done.

    `state` is one of queued, running, done (an outcome, whatever its verdict), failed
    (the service could not run it: retries used up, or a request the server refused) and
    cancelled. `verdict` is the Outcome's verdict name (`SUCCESS`, `ERROR`, ...).
    """

    id: str
    language: str
    code: str
    entry_point: str
    args: dict[str, Any]
    files: dict[str, str]
    env: dict[str, str]
    limits: dict[str, Any]
    lockfile: str | None
    tenant: str
    priority: int
    attempts: int
    max_attempts: int
    state: str
    lease_token: int | None
    retries: int
    last_error: str | None
    cancel_requested: bool
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    verdict: str | None
    result: Any
    error: dict[str, Any] | None
    stdout: str | None
    stderr: str | None
    exit_code: int | None
    usage: dict[str, Any] | None
    outcome_lockfile: str | None
    detail: str | None
    uid: UUID  # the key in the database; `id` is what producers and servers see
    tags: list[str]  # the labels a server must have to run it
    traceparent: str | None  # the trace its spans join (W3C Trace Context)

    @property
    def trace_id(self) -> str | None:
        """The id of the trace its spans are in (where a tracing backend finds them)."""
        return self.traceparent.split("-")[1] if self.traceparent else None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def timeline(self) -> dict[str, Any]:
        """Where its time went: enqueued, first claimed (started), finished, the wait in
        the queue, the time from claim to outcome, and the server's phases within it."""

        def ms(start: datetime | None, end: datetime | None) -> int | None:
            return None if start is None or end is None else round((end - start) / _MS)

        phases = (self.usage or {}).get("phases", {})
        return {
            "enqueued_at": self.enqueued_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "queue_wait_ms": ms(self.enqueued_at, self.started_at),
            "claim_to_outcome_ms": ms(self.started_at, self.finished_at),
            "server_phases_ms": {
                name.removesuffix("Ms"): int(value) for name, value in phases.items()
            },
            "attempts": self.attempts,
            "retries": self.retries,
            "trace_id": self.trace_id,
        }

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> JobRecord:
        return cls(*row)


def execute_arguments(job: JobRecord) -> dict[str, Any]:
    """`Client.execute`'s arguments for a queued job, under the job's own id."""
    return {
        "language": job.language,
        "code": job.code,
        "args": job.args,
        "job_id": job.id,
        "entry_point": job.entry_point or None,
        "files": job.files,
        "env": job.env,
        "limits": json_format.ParseDict(job.limits, pb.Limits()) if job.limits else None,
        "lockfile": pb.Lockfile(content=job.lockfile) if job.lockfile else None,
    }


def request_for(job: JobRecord) -> pb.ExecuteRequest:
    """The Execute request for a queued job, under the job's own id."""
    arguments = execute_arguments(job)
    return execute_request(
        arguments.pop("language"), arguments.pop("code"), arguments.pop("args"), **arguments
    )


def excerpt(data: bytes, max_bytes: int) -> str:
    """The last `max_bytes` of an output as text, marked when cut (NULs, which PostgreSQL's
    text cannot hold, as U+FFFD)."""
    text = data[-max_bytes:].decode(errors="replace").replace("\x00", "\ufffd")
    return text if len(data) <= max_bytes else "[…cut…]\n" + text


@dataclass(frozen=True)
class OutcomeColumns:
    state: str
    verdict: str
    result: str | None
    error: str | None
    stdout: str
    stderr: str
    exit_code: int
    usage: str
    outcome_lockfile: str | None
    detail: str


def outcome_columns(outcome: pb.Outcome, max_log_bytes: int) -> OutcomeColumns:
    """What a finished Execute writes into its row (JSON columns as JSON text)."""
    verdict = pb.Verdict.Name(outcome.verdict)
    result = outcome.result_json or None
    detail = outcome.detail
    if result is not None and "\\u0000" in result:
        # jsonb cannot hold NUL characters: keep the result as a JSON string instead.
        result = json.dumps(result)
        detail = f"{detail} (result kept as text: it holds NUL characters)".strip()
    error = None
    if outcome.HasField("error") and outcome.error.name:
        error = json.dumps(json_format.MessageToDict(outcome.error))
    return OutcomeColumns(
        state="cancelled" if outcome.verdict == pb.CANCELLED else "done",
        verdict=verdict,
        result=result,
        error=error,
        stdout=excerpt(outcome.stdout.data, max_log_bytes),
        stderr=excerpt(outcome.stderr.data, max_log_bytes),
        exit_code=outcome.exit_code,
        usage=json.dumps(json_format.MessageToDict(outcome.usage)),
        outcome_lockfile=outcome.lockfile.content if outcome.HasField("lockfile") else None,
        detail=detail,
    )
