"""The one way our gRPC server interceptors wrap a call's handler.

Authentication, tracing and the local server's idle clock each run code around the calls
they care about; what differs is that code, not how a handler is found and replaced. A
subclass says which methods it `wants` and how to wrap a request-response handler
(`around_unary`) and a streaming one (`around_stream`).
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc

__all__ = ["Activity", "Handler", "HandlerWrapper"]

Handler = Callable[[Any, grpc.aio.ServicerContext], Any]
"""A method's behaviour: (request or request iterator, context) -> reply or reply iterator."""


class HandlerWrapper(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps the handler of every call whose method it `wants`; others pass untouched."""

    def wants(self, method: str) -> bool:
        return True

    @abc.abstractmethod
    def around_unary(self, inner: Handler, method: str) -> Handler:
        """A handler that answers once (unary or client-streaming request)."""

    @abc.abstractmethod
    def around_stream(self, inner: Handler, method: str) -> Handler:
        """A handler that answers with a stream (an async generator)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not self.wants(method):
            return handler
        for kind in ("unary_unary", "stream_unary"):
            if getattr(handler, kind) is not None:
                return handler._replace(**{kind: self.around_unary(getattr(handler, kind), method)})
        for kind in ("unary_stream", "stream_stream"):
            if getattr(handler, kind) is not None:
                return handler._replace(
                    **{kind: self.around_stream(getattr(handler, kind), method)}
                )
        return handler


class Activity(HandlerWrapper):
    """Counts calls in flight and when the last one ended: the local server's idle clock
    (`gristmill serve --idle-exit-s`)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = time.monotonic()

    def idle_s(self) -> float:
        """How long no call has been in flight (0 while one is)."""
        return 0.0 if self.in_flight else time.monotonic() - self.last

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.last = time.monotonic()

    def around_unary(self, inner: Handler, method: str) -> Handler:
        async def unary(request: Any, context: Any) -> Any:
            with self._call():
                return await inner(request, context)

        return unary

    def around_stream(self, inner: Handler, method: str) -> Handler:
        async def stream(request: Any, context: Any) -> Any:
            with self._call():
                async for reply in inner(request, context):
                    yield reply

        return stream
