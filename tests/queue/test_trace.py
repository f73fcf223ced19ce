"""One trace from enqueue to outcome: the producer's traceparent kept with the job, the
worker's span continuing it, the server's call and job spans below the worker's (real
PostgreSQL, a real server over the scripted runner, the SDK's in-memory exporters)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gristmill.observability import Telemetry
from gristmill.observability.tracing import Tracing
from gristmill.queue import Queue
from gristmill.server import BackgroundServer
from tests.conftest import ConfigFactory
from tests.queue.conftest import ScriptedRunner
from tests.queue.test_worker import migrated_queue, running_worker, wait

TRACE_ID = uuid.uuid4().hex
PRODUCER_SPAN_ID = uuid.uuid4().hex[:16]
TRACEPARENT = f"00-{TRACE_ID}-{PRODUCER_SPAN_ID}-01"


@pytest.fixture
def traced_server(
    make_config: ConfigFactory, fake_runtimes: Path, fake_profiles: Path
) -> Iterator[tuple[str, InMemorySpanExporter]]:
    """A server over the scripted runner whose spans go to memory as each ends."""
    exporter = InMemorySpanExporter()
    config = make_config(runtimes_dir=fake_runtimes, profiles_dir=fake_profiles)
    telemetry = Telemetry(config.telemetry, Tracing(exporter, "gristmill-test", batch=False))
    with BackgroundServer(config, runner=ScriptedRunner(), telemetry=telemetry) as address:
        yield address, exporter


def _worker_tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


async def test_the_servers_job_span_is_in_the_producers_trace_below_the_workers(
    database: str, traced_server: tuple[str, InMemorySpanExporter]
) -> None:
    address, server_spans = traced_server
    provider, worker_spans = _worker_tracer()
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo", {"n": 1}, traceparent=TRACEPARENT)
        async with running_worker(database, [address], tracer=provider.get_tracer("test")):
            job = await wait(queue, job_id)
    assert job.state == "done" and job.trace_id == TRACE_ID
    assert job.timeline()["trace_id"] == TRACE_ID
    ours = list(worker_spans.get_finished_spans())
    consumer, waited, call = (_one(ours, n) for n in ("queue.job", "queue.wait", "execute"))
    assert consumer.kind is SpanKind.CONSUMER and consumer.parent is not None
    assert format(consumer.parent.span_id, "016x") == PRODUCER_SPAN_ID
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in ours if s.context)
    assert consumer.context is not None and call.parent is not None
    assert waited.parent is not None and waited.parent.span_id == consumer.context.span_id
    assert call.parent.span_id == consumer.context.span_id and call.kind is SpanKind.CLIENT
    theirs = list(server_spans.get_finished_spans())
    server_call = _one(theirs, "gristmill.v1.Runtime/Execute")
    server_job = _one(theirs, "job")
    assert call.context is not None and server_call.parent is not None
    assert server_call.parent.span_id == call.context.span_id
    assert server_call.context is not None and server_job.parent is not None
    assert server_job.parent.span_id == server_call.context.span_id
    assert format(server_job.context.trace_id, "032x") == TRACE_ID


async def test_a_job_without_a_traceparent_gets_a_trace_of_its_own_which_the_server_joins(
    database: str, traced_server: tuple[str, InMemorySpanExporter]
) -> None:
    """No tracer in the worker either: the job's own traceparent reaches the server."""
    address, server_spans = traced_server
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo")
        async with running_worker(database, [address]):
            job = await wait(queue, job_id)
    assert job.traceparent is not None
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", job.traceparent)
    server_call = _one(list(server_spans.get_finished_spans()), "gristmill.v1.Runtime/Execute")
    assert server_call.context is not None and server_call.parent is not None
    assert format(server_call.context.trace_id, "032x") == job.trace_id
    assert format(server_call.parent.span_id, "016x") == job.traceparent.split("-")[2]


def test_a_malformed_traceparent_is_refused(database: str) -> None:
    with migrated_queue(database) as queue, pytest.raises(psycopg.errors.CheckViolation):
        queue.enqueue("fake", "echo", traceparent="00-not-a-trace-01")
    with Queue(database) as queue:
        assert queue.counts() == {}
