# Generated from _async/client.py by scripts/unasync_client.py: edit that file.
"""The client of one server, written once: as asyncio in `_async/client.py`, from which
`scripts/unasync_client.py` generates the blocking `_sync/client.py` (a test fails when
that is not current)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Unpack

import grpc

from gristmill.client.outcome import Outcome
from gristmill.client.requests import JobOptions, execute_request, resolve_request
from gristmill.client.retry import RetryPolicy
from gristmill.client.transport import Attempts, Metadata, SyncChannel
from gristmill.credentials import Credentials
from gristmill.model import JsonValue
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc

__all__ = ["Client"]


class Client:
    """A client of one server ("host:port", "unix:/path"); use it as a context manager
    or close it. `metadata` of a call is sent beside the client's own (its token)."""

    def __init__(
        self,
        target: str,
        *,
        retry: RetryPolicy | None = None,
        channel: SyncChannel | None = None,
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
        metadata: Metadata | None = None,
    ) -> Any:
        attempts = Attempts(self.retry, timeout_s, self._metadata, metadata)
        while True:
            try:
                return getattr(self._stub, method)(request, **attempts.options())
            except grpc.RpcError as error:
                pause = attempts.pause_s(error)
                if pause is None:
                    raise
            time.sleep(pause)

    def run(
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
        outcome = self.execute(language, code, args, timeout_s=timeout_s, metadata=metadata, **job)
        return Outcome.from_proto(outcome)

    def execute(
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
        outcome: pb.Outcome = self._call("Execute", request, timeout_s, metadata)
        return outcome

    def execute_stream(
        self,
        language: str,
        code: str,
        args: Mapping[str, JsonValue] | None = None,
        *,
        timeout_s: float | None = None,
        metadata: Metadata | None = None,
        **job: Unpack[JobOptions],
    ) -> Iterator[pb.ExecuteEvent]:
        """The job's events as they happen, its Outcome last (see the proto for the order).

        Retried only until the first event arrives: a retry would replay the events.
        """
        request = execute_request(language, code, args, **job)
        attempts = Attempts(self.retry, timeout_s, self._metadata, metadata)
        while True:
            started = False
            try:
                for event in self._stub.ExecuteStream(request, **attempts.options()):
                    started = True
                    yield event
                return
            except grpc.RpcError as error:
                pause = None if started else attempts.pause_s(error)
                if pause is None:
                    raise
            time.sleep(pause)

    def cancel(
        self, job_id: str, *, timeout_s: float | None = None, metadata: Metadata | None = None
    ) -> bool:
        """Cancels a job; once this returns its processes are gone. False if it was not running."""
        request = pb.CancelRequest(job_id=job_id)
        response = self._call("Cancel", request, timeout_s, metadata)
        return bool(response.cancelled)

    def list_runtimes(
        self, *, timeout_s: float | None = None, metadata: Metadata | None = None
    ) -> pb.ListRuntimesResponse:
        request = pb.ListRuntimesRequest()
        response: pb.ListRuntimesResponse = self._call("ListRuntimes", request, timeout_s, metadata)
        return response

    def get_outcome(
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
        response: pb.GetOutcomeResponse = self._call("GetOutcome", request, timeout_s, metadata)
        return response

    def describe(
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
        metadata: Metadata | None = None,
    ) -> pb.ResolveResponse:
        """The code's dependencies and their lockfile; `error` is set when they cannot be had."""
        request = resolve_request(language, code, files)
        response: pb.ResolveResponse = self._call("Resolve", request, timeout_s, metadata)
        return response
