"""The client of one server, written once: as asyncio in `_async/client.py`, from which
`scripts/unasync_client.py` generates the blocking `_sync/client.py` (a test fails when
that is not current)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Unpack

import grpc

from gristmill.client.outcome import Outcome
from gristmill.client.requests import JobOptions, execute_request, resolve_request
from gristmill.client.retry import RetryPolicy
from gristmill.client.transport import AsyncChannel, Attempts, Metadata
from gristmill.credentials import Credentials
from gristmill.model import JsonValue
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc

__all__ = ["AsyncClient"]


class AsyncClient:
    """A client of one server ("host:port", "unix:/path"); use it as a context manager
    or close it. `metadata` of a call is sent beside the client's own (its token)."""

    def __init__(
        self,
        target: str,
        *,
        retry: RetryPolicy | None = None,
        channel: AsyncChannel | None = None,
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
        metadata: Metadata | None = None,
    ) -> Any:
        attempts = Attempts(self.retry, timeout_s, self._metadata, metadata)
        while True:
            try:
                return await getattr(self._stub, method)(request, **attempts.options())
            except grpc.RpcError as error:
                pause = attempts.pause_s(error)
                if pause is None:
                    raise
            await asyncio.sleep(pause)

    async def run(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Metadata | None = None,
        **job: Unpack[JobOptions],
    ) -> Outcome:
        """Runs a job and returns its typed `Outcome`."""
        outcome = await self.execute(
            language, code, args, timeout_s=timeout_s, metadata=metadata, **job
        )
        return Outcome.from_proto(outcome)

    async def execute(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Metadata | None = None,
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
        metadata: Metadata | None = None,
        **job: Unpack[JobOptions],
    ) -> AsyncIterator[pb.ExecuteEvent]:
        """The job's events as they happen, its Outcome last (see the proto for the order).

        Retried only until the first event arrives: a retry would replay the events.
        """
        request = execute_request(language, code, args, **job)
        attempts = Attempts(self.retry, timeout_s, self._metadata, metadata)
        while True:
            started = False
            try:
                async for event in self._stub.ExecuteStream(request, **attempts.options()):
                    started = True
                    yield event
                return
            except grpc.RpcError as error:
                pause = None if started else attempts.pause_s(error)
                if pause is None:
                    raise
            await asyncio.sleep(pause)

    async def cancel(
        self, job_id: str, *, timeout_s: float | None = None, metadata: Metadata | None = None
    ) -> bool:
        """Cancels a job; once this returns its processes are gone. False if it was not running."""
        request = pb.CancelRequest(job_id=job_id)
        response = await self._call("Cancel", request, timeout_s, metadata)
        return bool(response.cancelled)

    async def list_runtimes(
        self, *, timeout_s: float | None = None, metadata: Metadata | None = None
    ) -> pb.ListRuntimesResponse:
        request = pb.ListRuntimesRequest()
        response: pb.ListRuntimesResponse = await self._call(
            "ListRuntimes", request, timeout_s, metadata
        )
        return response

    async def get_outcome(
        self,
        job_id: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        metadata: Metadata | None = None,
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
        metadata: Metadata | None = None,
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
        metadata: Metadata | None = None,
    ) -> pb.ResolveResponse:
        """The code's dependencies and their lockfile; `error` is set when they cannot be had."""
        request = resolve_request(language, code, files)
        response: pb.ResolveResponse = await self._call("Resolve", request, timeout_s, metadata)
        return response
