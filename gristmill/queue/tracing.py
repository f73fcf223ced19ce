"""One trace from enqueue to outcome: the producer's `traceparent`, kept with the job,
continued by the worker's span for the job, whose call span the server continues.

A producer's current span (if it has one) is the job's `traceparent`; otherwise the
queue gives the job a trace of its own (`gristmill.new_traceparent()`). The worker's
span `queue.job` (a consumer's) is a child of it and covers the job from its enqueue
(first attempt; later ones from their claim) to its written outcome; `queue.wait` is the
time it waited in PostgreSQL, `execute` the call, whose `traceparent` goes in the call's
metadata: the server's call span, and its job span below, are children of `execute`.
A worker without a tracer records nothing and passes the producer's `traceparent` on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gristmill.queue.records import JobRecord

__all__ = ["JobSpans", "current_traceparent"]

_PROPAGATOR = TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The current span's `traceparent` (None when there is no valid span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def _ns(job_time: float) -> int:
    return int(job_time * 1e9)


class JobSpans:
    """The worker's spans of one attempt at a job, begun at its claim."""

    def __init__(self, tracer: trace.Tracer, job: JobRecord, worker_id: str) -> None:
        claimed = time.time_ns()
        carrier = {"traceparent": job.traceparent} if job.traceparent else {}
        parent = _PROPAGATOR.extract(carrier, context=otel_context.Context())
        first = job.attempts <= 1
        enqueued = _ns(job.enqueued_at.timestamp())
        self._tracer = tracer
        self._span = tracer.start_span(
            "queue.job",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=min(enqueued, claimed) if first else claimed,
            attributes={
                "gristmill.job.id": job.id,
                "gristmill.job.language": job.language,
                "gristmill.tenant": job.tenant,
                "gristmill.queue.attempt": job.attempts,
                "gristmill.queue.worker": worker_id,
                "gristmill.queue.wait_ms": max(0, claimed - enqueued) // 1_000_000,
            },
        )
        self._context = trace.set_span_in_context(self._span, parent)
        if first:
            tracer.start_span("queue.wait", self._context, start_time=enqueued).end(claimed)
        self._call: Span | None = None

    def call_metadata(self, target: str) -> Sequence[tuple[str, str]]:
        """Opens the `execute` span; the metadata that makes the server's spans its children."""
        self._call = self._tracer.start_span(
            "execute",
            self._context,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "server.address": target},
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._call))
        return list(carrier.items())

    def call_ended(self, error: BaseException | None = None) -> None:
        if self._call is None:
            return
        if error is not None:
            self._call.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self._call.end()
        self._call = None

    def end(self, state: str) -> None:
        """The attempt is over: `state` is what became of the job (done, retried, ...)."""
        self.call_ended()
        self._span.set_attribute("gristmill.queue.state", state)
        self._span.end()
