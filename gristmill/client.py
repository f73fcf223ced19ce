"""The Python client for queue workers: `Client` (blocking) and `AsyncClient` (asyncio).

`run` answers with a typed `Outcome` (the verdict as a `Verdict` enum, the result
decoded from JSON, stdout and stderr as text); `execute` and `execute_stream` answer
with the contract's own messages (`gristmill.v1.runtime_pb2`). A job failing is not an
exception; the service failing is a `grpc.RpcError`.

Every keyword is typed (`JobOptions`), so that a typo (`job_idd=`) fails type checking.

A call waits for the server to be ready (`wait_for_ready`), so a server being restarted
delays it rather than failing it, and a call that fails with UNAVAILABLE mid-way is
retried with backoff under the same job id, which is the server's idempotency key: a
retry joins the first attempt's run or gets its outcome, so the job never runs twice at
once (a run every caller abandoned is killed, and a later retry runs it again).
`RetryPolicy(retry_resource_exhausted=True)` also retries a full server, after the
pause the server asks for (`grpc-retry-pushback-ms`) or the policy's own backoff.
`timeout_s` is the deadline of the whole call, retries included; the server bounds the
job by it and kills the job when it passes. Without one a call may wait indefinitely
for a server that never comes back.

`SERVICE_CONFIG` is the same policy in gRPC's service-config JSON, for clients in other
languages to copy.

A server that authenticates its callers wants a bearer token or a client certificate:
`credentials=Credentials(token=..., ca_file=...)`, else what the environment says
(`GRISTMILL_TOKEN`, `GRISTMILL_TLS_CA`, ...; see `gristmill.credentials`).
"""

from __future__ import annotations

import asyncio
import enum
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypedDict, TypeVar, Unpack

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from gristmill.credentials import Credentials
from gristmill.model import MAX_MESSAGE_BYTES, JsonValue
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc

__all__ = [
    "SERVICE_CONFIG",
    "AsyncClient",
    "Client",
    "Credentials",
    "JobOptions",
    "Limits",
    "Lockfile",
    "Outcome",
    "RetryPolicy",
    "Verdict",
    "execute_request",
    "field_violations",
    "outcome_result",
    "quota_failures",
    "resolve_request",
    "server_full",
    "too_large",
]

Limits = pb.Limits
Lockfile = pb.Lockfile

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""Trailing metadata holding a `google.rpc.Status` with the error's details."""

PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata by which a server says how long to wait before retrying (gRPC's own)."""

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": "gristmill.v1.Runtime"}],
            "waitForReady": True,
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
"""gRPC's retry policy and wait-for-ready for every method of the service, as the
service-config JSON any gRPC client takes (`grpc.service_config` in Python)."""


class Verdict(enum.IntEnum):
    """What happened to a job: the proto enum `gristmill.v1.Verdict`, as a Python enum."""

    VERDICT_UNSPECIFIED = 0
    SUCCESS = 1
    ERROR = 2
    INVALID_ARGUMENTS = 3
    TIMEOUT = 4
    MEMORY_LIMIT = 5
    CPU_LIMIT = 6
    OUTPUT_LIMIT = 7
    PROCESS_LIMIT = 8
    KILLED_BY_SIGNAL = 9
    CANCELLED = 10
    SANDBOX_ERROR = 11
    COMPILE_ERROR = 12
    DEPENDENCY_ERROR = 13
    SYSCALL_DENIED = 14
    NETWORK_LIMIT = 20


@dataclass(frozen=True)
class Outcome:
    """A job's outcome, typed: `proto` keeps the whole message (usage, lockfile, ...)."""

    job_id: str
    verdict: Verdict
    # The entry point's return value, decoded from JSON (None when it returned none).
    result: JsonValue
    # The user's error (name, message, stack) when the verdict is not SUCCESS; else None.
    error: pb.JobError | None
    # The job's output as text (invalid UTF-8 replaced); `proto.stdout.data` has the bytes.
    stdout: str
    stderr: str
    exit_code: int
    signal: int
    detail: str
    proto: pb.Outcome

    @property
    def files(self) -> dict[str, bytes]:
        """The files the job left that `output_files` asked for, by path under /job."""
        return {f.path: f.content for f in self.proto.files}

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.SUCCESS

    @property
    def usage(self) -> pb.Usage:
        return self.proto.usage

    @property
    def lockfile(self) -> pb.Lockfile | None:
        return self.proto.lockfile if self.proto.HasField("lockfile") else None

    @classmethod
    def from_proto(cls, message: pb.Outcome) -> Outcome:
        return cls(
            job_id=message.job_id,
            verdict=Verdict(message.verdict),
            result=outcome_result(message),
            error=message.error if message.HasField("error") else None,
            stdout=message.stdout.data.decode(errors="replace"),
            stderr=message.stderr.data.decode(errors="replace"),
            exit_code=message.exit_code,
            signal=message.signal,
            detail=message.detail,
            proto=message,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How calls survive an unavailable or full server.

    `wait_for_ready`: a call waits for the server to be reachable instead of failing at
    once (bounded by its `timeout_s`). A call that fails with UNAVAILABLE is retried up
    to `max_attempts` in all, with exponential backoff and full jitter; with
    `retry_resource_exhausted` a call refused by a full server is retried too.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    wait_for_ready: bool = True
    retry_resource_exhausted: bool = False

    def pause_s(self, error: grpc.RpcError, attempt: int, deadline: _Deadline) -> float | None:
        """The pause before retrying failed attempt `attempt` (1-based), or None: give up.

        A message over a size limit is RESOURCE_EXHAUSTED too, but retrying cannot help
        it: only a full server (`server_full`) is retried."""
        retryable = error.code() == grpc.StatusCode.UNAVAILABLE or (
            self.retry_resource_exhausted and server_full(error)
        )
        if not retryable or attempt >= self.max_attempts:
            return None
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        pause = _pushback_s(error)
        if pause is None:
            pause = random.uniform(0, ceiling)  # full jitter: retrying workers spread out
        remaining = deadline.remaining()
        return pause if remaining is None or remaining > pause else None

    def channel_options(self) -> list[tuple[str, int | str]]:
        # gRPC's own reconnect backoff starts at 1 s; keep it in step with our retries so
        # a retry is not refused by a channel still waiting to reconnect.
        backoff_ms = int(self.initial_backoff_s * 1000)
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", int(self.max_backoff_s * 1000)),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ]


def server_full(error: grpc.RpcError) -> bool:
    """Whether a RESOURCE_EXHAUSTED came from a full server or a full tenant quota (it
    carries a `google.rpc.QuotaFailure`, whose subject says whose: "server" or
    "tenant:NAME", or a pushback), as opposed to a message over a size limit
    (`too_large`), which gRPC itself reports with the same code."""
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    return bool(quota_failures(error)) or _pushback_s(error) is not None


def quota_failures(error: grpc.RpcError) -> list[error_details_pb2.QuotaFailure.Violation]:
    """The quota violations a RESOURCE_EXHAUSTED error names (empty when none)."""
    return [
        violation
        for detail in _details(error)
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR)
        for violation in _unpacked(detail, error_details_pb2.QuotaFailure()).violations
    ]


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """An INVALID_ARGUMENT error's fields (`job.limits.memory_bytes`, ...) and what is
    wrong with each, from its `google.rpc.BadRequest` details."""
    return {
        violation.field: violation.description
        for detail in _details(error)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
        for violation in _unpacked(detail, error_details_pb2.BadRequest()).field_violations
    }


def too_large(error: grpc.RpcError) -> bool:
    """Whether a call failed because a message (the outcome, say) was over a side's
    message size limit: raise the limit (`grpc.max_receive_message_length`), or send
    less; waiting will not help."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not server_full(error)


_M = TypeVar("_M", bound=Message)


def _unpacked(detail: any_pb2.Any, into: _M) -> _M:
    detail.Unpack(into)
    return into


def _trailing(error: grpc.RpcError) -> Sequence[tuple[str, str | bytes]]:
    """The error's trailing metadata (none for an error made on the client's side)."""
    trailing = getattr(error, "trailing_metadata", None)
    try:
        return tuple(trailing() or ()) if callable(trailing) else ()
    except Exception:  # an aio error before any metadata arrived
        return ()


def _details(error: grpc.RpcError) -> list[any_pb2.Any]:
    for key, value in _trailing(error):
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []


def _pushback_s(error: grpc.RpcError) -> float | None:
    """The pause the server asked for in its trailing metadata, if it did."""
    for key, value in _trailing(error):
        if key == PUSHBACK_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return None
    return None


class JobOptions(TypedDict, total=False):
    """The optional parts of a job: keyword arguments of every call that sends one."""

    # The idempotency key; a new uuid4 unless given.
    job_id: str | None
    entry_point: str | None
    # Further files beside the code, by relative path.
    files: Mapping[str, bytes | str] | None
    env: Mapping[str, str] | None
    limits: pb.Limits | None
    # From an earlier Outcome or `resolve`: replays exactly those dependencies.
    lockfile: pb.Lockfile | None
    stdin: bytes | str | None
    # Paths or globs under /job whose files come back in `Outcome.files`.
    output_files: Sequence[str] | None
    # Seen by the job as GRISTMILL_CTX_<KEY> variables.
    context: Mapping[str, str] | None
    # Run the code as a plain script with this argv instead of calling its entry point.
    script: Sequence[str] | None


def execute_request(
    language: str,
    code: str,
    args: Mapping[str, JsonValue] | None = None,
    **options: Unpack[JobOptions],
) -> pb.ExecuteRequest:
    """The request for one job. Arguments travel as exact JSON text (`args_json`) so that
    big integers survive; a script (`script=[...]`) takes none. A keyword that is not a
    `JobOptions` key is a TypeError, as it would be for a spelled-out signature."""
    if unknown := sorted(set(options) - JobOptions.__optional_keys__):
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    stdin = options.get("stdin") or b""
    script = options.get("script")
    job = pb.Job(
        id=options.get("job_id") or str(uuid.uuid4()),
        language=language,
        code=code,
        entry_point=options.get("entry_point") or "",
        args_json=json.dumps(dict(args or {})) if script is None or args else "",
        files=_files(options.get("files")),
        env=dict(options.get("env") or {}),
        limits=options.get("limits"),
        lockfile=options.get("lockfile"),
        stdin=stdin.encode() if isinstance(stdin, str) else stdin,
        output_files=list(options.get("output_files") or ()),
        context=dict(options.get("context") or {}),
    )
    if script is not None:
        job.script.argv.extend(script)
    return pb.ExecuteRequest(job=job)


def resolve_request(
    language: str, code: str, files: Mapping[str, bytes | str] | None = None
) -> pb.ResolveRequest:
    return pb.ResolveRequest(language=language, code=code, files=_files(files))


def _files(files: Mapping[str, bytes | str] | None) -> list[pb.File]:
    return [
        pb.File(path=path, content=content.encode() if isinstance(content, str) else content)
        for path, content in (files or {}).items()
    ]


def outcome_result(outcome: pb.Outcome) -> JsonValue:
    """The job's result decoded from JSON (None when it returned none)."""
    return json.loads(outcome.result_json) if outcome.result_json else None


class _Deadline:
    """The time left of a call's overall timeout, across its retries."""

    def __init__(self, timeout_s: float | None) -> None:
        self._end = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())


class Client:
    """A blocking client of one server ("host:port", "unix:/path"); use it as a context
    manager or call `close`."""

    def __init__(
        self,
        target: str,
        *,
        retry: RetryPolicy | None = None,
        channel: grpc.Channel | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.credentials = Credentials.from_env() if credentials is None else credentials
        self._metadata = self.credentials.metadata()
        self._channel = channel or self.credentials.channel(target, self.retry.channel_options())
        self._stub = runtime_pb2_grpc.RuntimeStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(
        self,
        method: str,
        request: Any,
        timeout_s: float | None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> Any:
        deadline = _Deadline(timeout_s)
        attempt = 1
        while True:
            try:
                return getattr(self._stub, method)(
                    request,
                    timeout=deadline.remaining(),
                    wait_for_ready=self.retry.wait_for_ready,
                    metadata=(*self._metadata, *(metadata or ())),
                )
            except grpc.RpcError as error:
                pause = self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    def run(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **job: Unpack[JobOptions],
    ) -> Outcome:
        """Runs a job and returns its typed `Outcome`."""
        return Outcome.from_proto(
            self.execute(
                language,
                code,
                args,
                timeout_s=timeout_s,
                metadata=metadata,
                **job,
            )
        )

    def execute(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **job: Unpack[JobOptions],
    ) -> pb.Outcome:
        """Runs a job and returns its Outcome message (see `run` for the typed one)."""
        request = execute_request(language, code, args, **job)
        outcome: pb.Outcome = self._call("Execute", request, timeout_s, metadata)
        return outcome

    def execute_stream(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **job: Unpack[JobOptions],
    ) -> Iterator[pb.ExecuteEvent]:
        """The job's events as they happen, its Outcome last (see the proto for the order).

        Retried only until the first event arrives: a retry would replay the events.
        """
        request = execute_request(language, code, args, **job)
        deadline = _Deadline(timeout_s)
        attempt = 1
        while True:
            started = False
            try:
                for event in self._stub.ExecuteStream(
                    request,
                    timeout=deadline.remaining(),
                    wait_for_ready=self.retry.wait_for_ready,
                    metadata=(*self._metadata, *(metadata or ())),
                ):
                    started = True
                    yield event
                return
            except grpc.RpcError as error:
                pause = None if started else self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    def cancel(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> bool:
        """Cancels a job; once this returns its processes are gone. False if it was not running."""
        response = self._call("Cancel", pb.CancelRequest(job_id=job_id), timeout_s, metadata)
        return bool(response.cancelled)

    def list_runtimes(
        self,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> pb.ListRuntimesResponse:
        response: pb.ListRuntimesResponse = self._call(
            "ListRuntimes", pb.ListRuntimesRequest(), timeout_s, metadata
        )
        return response

    def get_outcome(
        self,
        job_id: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> pb.GetOutcomeResponse:
        """The state of a job sent earlier (and its outcome once done), without sending it
        again; with `wait`, a job in flight is waited for."""
        request = pb.GetOutcomeRequest(job_id=job_id, wait=wait)
        response: pb.GetOutcomeResponse = self._call("GetOutcome", request, timeout_s, metadata)
        return response

    def describe(
        self,
        language: str,
        code: str,
        entry_point: str | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The entry point's parameters as a JSON Schema object."""
        request = pb.DescribeRequest(language=language, code=code, entry_point=entry_point or "")
        response = self._call("Describe", request, timeout_s, metadata)
        schema: dict[str, Any] = json.loads(response.parameters_schema_json)
        return schema

    def resolve(
        self,
        language: str,
        code: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> pb.ResolveResponse:
        """The code's dependencies and their lockfile; `error` is set when they cannot be had."""
        response: pb.ResolveResponse = self._call(
            "Resolve", resolve_request(language, code, files), timeout_s, metadata
        )
        return response


class AsyncClient:
    """The asyncio twin of `Client`; use `async with` or `await close()`."""

    def __init__(
        self,
        target: str,
        *,
        retry: RetryPolicy | None = None,
        channel: grpc.aio.Channel | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.credentials = Credentials.from_env() if credentials is None else credentials
        self._metadata = self.credentials.metadata()
        self._channel = channel or self.credentials.aio_channel(
            target, self.retry.channel_options()
        )
        self._stub = runtime_pb2_grpc.RuntimeStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self,
        method: str,
        request: Any,
        timeout_s: float | None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> Any:
        deadline = _Deadline(timeout_s)
        attempt = 1
        while True:
            try:
                return await getattr(self._stub, method)(
                    request,
                    timeout=deadline.remaining(),
                    wait_for_ready=self.retry.wait_for_ready,
                    metadata=(*self._metadata, *(metadata or ())),
                )
            except grpc.RpcError as error:
                pause = self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def run(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **job: Unpack[JobOptions],
    ) -> Outcome:
        """Runs a job and returns its typed `Outcome`."""
        return Outcome.from_proto(
            await self.execute(
                language,
                code,
                args,
                timeout_s=timeout_s,
                metadata=metadata,
                **job,
            )
        )

    async def execute(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **job: Unpack[JobOptions],
    ) -> pb.Outcome:
        """Runs a job and returns its Outcome message (see `run` for the typed one)."""
        request = execute_request(language, code, args, **job)
        outcome: pb.Outcome = await self._call("Execute", request, timeout_s, metadata)
        return outcome

    async def execute_stream(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        **job: Unpack[JobOptions],
    ) -> AsyncIterator[pb.ExecuteEvent]:
        """The job's events as they happen, its Outcome last; retried before the first only."""
        request = execute_request(language, code, args, **job)
        deadline = _Deadline(timeout_s)
        attempt = 1
        while True:
            started = False
            try:
                async for event in self._stub.ExecuteStream(
                    request,
                    timeout=deadline.remaining(),
                    wait_for_ready=self.retry.wait_for_ready,
                    metadata=(*self._metadata, *(metadata or ())),
                ):
                    started = True
                    yield event
                return
            except grpc.RpcError as error:
                pause = None if started else self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def cancel(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> bool:
        """Cancels a job; once this returns its processes are gone. False if it was not running."""
        response = await self._call("Cancel", pb.CancelRequest(job_id=job_id), timeout_s, metadata)
        return bool(response.cancelled)

    async def list_runtimes(
        self,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> pb.ListRuntimesResponse:
        response: pb.ListRuntimesResponse = await self._call(
            "ListRuntimes", pb.ListRuntimesRequest(), timeout_s, metadata
        )
        return response

    async def get_outcome(
        self,
        job_id: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> pb.GetOutcomeResponse:
        """The state of a job sent earlier (and its outcome once done), without sending it
        again; with `wait`, a job in flight is waited for."""
        request = pb.GetOutcomeRequest(job_id=job_id, wait=wait)
        response: pb.GetOutcomeResponse = await self._call(
            "GetOutcome", request, timeout_s, metadata
        )
        return response

    async def describe(
        self,
        language: str,
        code: str,
        entry_point: str | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The entry point's parameters as a JSON Schema object."""
        request = pb.DescribeRequest(language=language, code=code, entry_point=entry_point or "")
        response = await self._call("Describe", request, timeout_s, metadata)
        schema: dict[str, Any] = json.loads(response.parameters_schema_json)
        return schema

    async def resolve(
        self,
        language: str,
        code: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> pb.ResolveResponse:
        """The code's dependencies and their lockfile; `error` is set when they cannot be had."""
        response: pb.ResolveResponse = await self._call(
            "Resolve", resolve_request(language, code, files), timeout_s, metadata
        )
        return response
