"""OpenTelemetry traces: a span per call, per job and per phase of a job.

A call's span continues the caller's trace (`traceparent` in the gRPC metadata, W3C
Trace Context); the job's span is its child, and each phase (queue, resolve,
install, build, prepare, sandbox_setup, run) a child of the job's, timed by the
job's own phase events as they happen. Spans go to an OTLP/gRPC collector; with no
collector configured none of this is imported or run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gristmill.interceptors import Handler, HandlerWrapper
from gristmill.model import Job, JobEvent, Outcome, PhaseEvent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["JobTrace", "Tracing"]

PHASES = frozenset({"resolve", "install", "build", "prepare", "sandbox_setup", "run"})
"""The phase events that open a phase's span; others (e.g. "prime") are progress lines."""

TRACED_SERVICE = "/gristmill.v1.Runtime/"
"""Calls of this service get spans; health checks and reflection do not."""

EXPORT_TIMEOUT_S = 2.0
"""How long one export to the collector may take, retries included."""

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """A tracer of its own (never the process-wide provider) and what it exports to."""

    def __init__(self, exporter: SpanExporter, service_name: str, batch: bool = True) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self._provider.add_span_processor(processor)
        self.tracer = self._provider.get_tracer("gristmill")

    @classmethod
    def otlp(cls, endpoint: str, service_name: str) -> Tracing:
        """Spans exported in batches to the OTLP/gRPC collector at `endpoint`."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = endpoint.startswith("http://")
        # Bounded: a collector that is down must not hold up the server's stop for long.
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=insecure, timeout=EXPORT_TIMEOUT_S)
        return cls(exporter, service_name)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _CallSpans(self.tracer)

    def job(self, job: Job, tenant: str) -> JobTrace:
        return JobTrace(self.tracer, job, tenant)

    def close(self) -> None:
        """Exports what is left, then stops."""
        self._provider.shutdown()


class JobTrace:
    """One job's span and its current phase's, a child of the calling span."""

    def __init__(self, tracer: trace.Tracer, job: Job, tenant: str) -> None:
        self._tracer = tracer
        self._span = tracer.start_span(
            "job",
            attributes={
                "gristmill.job.id": job.id,
                "gristmill.job.language": job.language,
                "gristmill.tenant": tenant,
            },
        )
        self._context = trace.set_span_in_context(self._span)
        self._phase_name = ""
        self._phase: Span | None = None
        self._open("queue")

    def _open(self, name: str) -> None:
        self._close_phase()
        self._phase_name = name
        self._phase = self._tracer.start_span(name, context=self._context)

    def _close_phase(self) -> None:
        if self._phase is not None:
            self._phase.end()
            self._phase = None

    def admitted(self) -> None:
        """The queue phase is over."""
        self._close_phase()

    def event(self, event: JobEvent) -> None:
        if not isinstance(event, PhaseEvent):
            return
        if event.name in PHASES and event.name != self._phase_name:
            self._open(event.name)

    def finished(self, outcome: Outcome) -> None:
        self._close_phase()
        self._span.set_attributes(
            {
                "gristmill.verdict": outcome.verdict.value,
                "gristmill.sandbox": outcome.sandbox,
                "gristmill.warm_sandbox": outcome.warm_sandbox,
            }
        )
        if outcome.environment is not None:
            self._span.set_attribute("gristmill.environment.cached", outcome.environment.cached)
        if outcome.build is not None:
            self._span.set_attribute("gristmill.build.cached", outcome.build.cached)
        if outcome.detail:
            self._span.set_attribute("gristmill.detail", outcome.detail)
        self._span.end()

    def failed(self, error: BaseException) -> None:
        self._close_phase()
        self._span.record_exception(error)
        self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self._span.end()


def _carrier(context: grpc.aio.ServicerContext) -> dict[str, str]:
    metadata = context.invocation_metadata() or ()
    return {key: value for key, value in metadata if isinstance(value, str)}


@contextlib.contextmanager
def _call_span(
    tracer: trace.Tracer, method: str, context: grpc.aio.ServicerContext
) -> Iterator[otel_context.Context]:
    """The call's span, a child of the caller's `traceparent`, as the context to run in."""
    parent = _PROPAGATOR.extract(_carrier(context))
    service, _, name = method.strip("/").rpartition("/")
    span = tracer.start_span(
        method.strip("/"),
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    try:
        yield trace.set_span_in_context(span)
    except BaseException as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        span.end()


@contextlib.contextmanager
def _current(context: otel_context.Context) -> Iterator[None]:
    """`context` current for the block; entered and left in one task, never across a
    `yield` of a stream (a client going away closes a stream from another context)."""
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


class _CallSpans(HandlerWrapper):
    """Wraps each call of the Runtime service in its span."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def wants(self, method: str) -> bool:
        return method.startswith(TRACED_SERVICE)

    def around_unary(self, inner: Handler, method: str) -> Handler:
        tracer = self._tracer

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _call_span(tracer, method, context) as call, _current(call):
                return await inner(request, context)

        return unary

    def around_stream(self, inner: Handler, method: str) -> Handler:
        tracer = self._tracer

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _call_span(tracer, method, context) as call:
                async with contextlib.aclosing(inner(request, context)) as replies:
                    while True:
                        with _current(call):
                            try:
                                reply = await anext(replies)
                            except StopAsyncIteration:
                                return
                        yield reply

        return stream
