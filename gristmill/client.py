"""The Python client for queue workers: `Client` (blocking) and `AsyncClient` (asyncio).

Calls answer with the contract's own messages (`gristmill.v1.runtime_pb2`): `execute`
returns an `Outcome`, whose `verdict` says what happened to the job and whose
`result_json` holds its result; `outcome_result` decodes it. A job failing is not an
exception; the service failing is a `grpc.RpcError`.

A call that finds the server unavailable is retried with backoff under the same job id,
which is the server's idempotency key: a retry joins the first attempt's run or gets its
outcome, so the job never runs twice at once (a run every caller abandoned is killed, and
a later retry runs it again). `timeout_s` is the deadline of the whole call, retries
included; the server bounds the job by it and kills the job when it passes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from gristmill.model import MAX_MESSAGE_BYTES, JsonValue
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc

__all__ = [
    "AsyncClient",
    "Client",
    "Limits",
    "Outcome",
    "RetryPolicy",
    "Verdict",
    "execute_request",
    "outcome_result",
    "resolve_request",
]

Outcome = pb.Outcome
Limits = pb.Limits
Verdict = pb.Verdict


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts of a call that failed with UNAVAILABLE, and the pause before each retry."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def pause_s(self, error: grpc.RpcError, attempt: int, deadline: _Deadline) -> float | None:
        """The pause before retrying failed attempt `attempt` (1-based), or None: give up."""
        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt >= self.max_attempts:
            return None
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        pause = random.uniform(0, ceiling)  # full jitter: retrying workers spread out
        remaining = deadline.remaining()
        return pause if remaining is None or remaining > pause else None

    def channel_options(self) -> list[tuple[str, int]]:
        # gRPC's own reconnect backoff starts at 1 s; keep it in step with our retries so
        # a retry is not refused by a channel still waiting to reconnect.
        backoff_ms = int(self.initial_backoff_s * 1000)
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.min_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", int(self.max_backoff_s * 1000)),
        ]


def execute_request(
    language: str,
    code: str,
    args: Mapping[str, JsonValue] | None = None,
    *,
    job_id: str | None = None,
    entry_point: str | None = None,
    files: Mapping[str, bytes | str] | None = None,
    env: Mapping[str, str] | None = None,
    limits: pb.Limits | None = None,
    lockfile: pb.Lockfile | None = None,
) -> pb.ExecuteRequest:
    """The request for one job; its id is a new uuid4 unless given.

    Arguments travel as exact JSON text (`args_json`) so that big integers survive.
    `lockfile` (from an earlier Outcome or `resolve`) replays exactly those dependencies.
    """
    job = pb.Job(
        id=job_id or str(uuid.uuid4()),
        language=language,
        code=code,
        entry_point=entry_point or "",
        args_json=json.dumps(dict(args or {})),
        files=_files(files),
        env=dict(env or {}),
        limits=limits,
        lockfile=lockfile,
    )
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
    """A blocking client of one server; use it as a context manager or call `close`."""

    def __init__(
        self,
        target: str,
        *,
        retry: RetryPolicy | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._channel = channel or grpc.insecure_channel(
            target, options=self.retry.channel_options()
        )
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

    def _call(self, method: str, request: Any, timeout_s: float | None) -> Any:
        deadline = _Deadline(timeout_s)
        attempt = 1
        while True:
            try:
                return getattr(self._stub, method)(request, timeout=deadline.remaining())
            except grpc.RpcError as error:
                pause = self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    def execute(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        **job: Any,
    ) -> pb.Outcome:
        """Runs a job and returns its Outcome; `job` takes `execute_request`'s keywords."""
        request = execute_request(language, code, args, **job)
        outcome: pb.Outcome = self._call("Execute", request, timeout_s)
        return outcome

    def execute_stream(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        **job: Any,
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
                for event in self._stub.ExecuteStream(request, timeout=deadline.remaining()):
                    started = True
                    yield event
                return
            except grpc.RpcError as error:
                pause = None if started else self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            time.sleep(pause)
            attempt += 1

    def cancel(self, job_id: str, *, timeout_s: float | None = None) -> bool:
        """Cancels a job; once this returns its processes are gone. False if it was not running."""
        response = self._call("Cancel", pb.CancelRequest(job_id=job_id), timeout_s)
        return bool(response.cancelled)

    def list_runtimes(self, *, timeout_s: float | None = None) -> pb.ListRuntimesResponse:
        response: pb.ListRuntimesResponse = self._call(
            "ListRuntimes", pb.ListRuntimesRequest(), timeout_s
        )
        return response

    def describe(
        self,
        language: str,
        code: str,
        entry_point: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """The entry point's parameters as a JSON Schema object."""
        request = pb.DescribeRequest(language=language, code=code, entry_point=entry_point or "")
        response = self._call("Describe", request, timeout_s)
        schema: dict[str, Any] = json.loads(response.parameters_schema_json)
        return schema

    def resolve(
        self,
        language: str,
        code: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> pb.ResolveResponse:
        """The code's dependencies and their lockfile; `error` is set when they cannot be had."""
        response: pb.ResolveResponse = self._call(
            "Resolve", resolve_request(language, code, files), timeout_s
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
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._channel = channel or grpc.aio.insecure_channel(
            target, options=self.retry.channel_options()
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

    async def _call(self, method: str, request: Any, timeout_s: float | None) -> Any:
        deadline = _Deadline(timeout_s)
        attempt = 1
        while True:
            try:
                return await getattr(self._stub, method)(request, timeout=deadline.remaining())
            except grpc.RpcError as error:
                pause = self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def execute(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        **job: Any,
    ) -> pb.Outcome:
        """Runs a job and returns its Outcome; `job` takes `execute_request`'s keywords."""
        request = execute_request(language, code, args, **job)
        outcome: pb.Outcome = await self._call("Execute", request, timeout_s)
        return outcome

    async def execute_stream(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        **job: Any,
    ) -> AsyncIterator[pb.ExecuteEvent]:
        """The job's events as they happen, its Outcome last; retried before the first only."""
        request = execute_request(language, code, args, **job)
        deadline = _Deadline(timeout_s)
        attempt = 1
        while True:
            started = False
            try:
                async for event in self._stub.ExecuteStream(request, timeout=deadline.remaining()):
                    started = True
                    yield event
                return
            except grpc.RpcError as error:
                pause = None if started else self.retry.pause_s(error, attempt, deadline)
                if pause is None:
                    raise
            await asyncio.sleep(pause)
            attempt += 1

    async def cancel(self, job_id: str, *, timeout_s: float | None = None) -> bool:
        """Cancels a job; once this returns its processes are gone. False if it was not running."""
        response = await self._call("Cancel", pb.CancelRequest(job_id=job_id), timeout_s)
        return bool(response.cancelled)

    async def list_runtimes(self, *, timeout_s: float | None = None) -> pb.ListRuntimesResponse:
        response: pb.ListRuntimesResponse = await self._call(
            "ListRuntimes", pb.ListRuntimesRequest(), timeout_s
        )
        return response

    async def describe(
        self,
        language: str,
        code: str,
        entry_point: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """The entry point's parameters as a JSON Schema object."""
        request = pb.DescribeRequest(language=language, code=code, entry_point=entry_point or "")
        response = await self._call("Describe", request, timeout_s)
        schema: dict[str, Any] = json.loads(response.parameters_schema_json)
        return schema

    async def resolve(
        self,
        language: str,
        code: str,
        files: Mapping[str, bytes | str] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> pb.ResolveResponse:
        """The code's dependencies and their lockfile; `error` is set when they cannot be had."""
        response: pb.ResolveResponse = await self._call(
            "Resolve", resolve_request(language, code, files), timeout_s
        )
        return response
