"""Traces of a real server, caught by the SDK's in-memory exporter: the call's span
continues the caller's `traceparent`, the job's span is its child, and each phase the
job went through is a child of the job's."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gristmill.observability import Telemetry
from gristmill.observability.tracing import Tracing
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc as pb_grpc
from tests.observability.conftest import c_job

# The generated stub is untyped; held as Any so that calling it is not an untyped call.
RuntimeStub: Any = pb_grpc.RuntimeStub
TRACE_ID = uuid.uuid4().hex
CALLER_SPAN_ID = uuid.uuid4().hex[:16]
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"


@pytest.fixture
def traced(real_config, runtimes_dir) -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """A stub of a real server whose spans go to memory, as each one ends."""
    exporter = InMemorySpanExporter()
    config = real_config(runtimes_dir=runtimes_dir)
    telemetry = Telemetry(config.telemetry, Tracing(exporter, "gristmill-test", batch=False))
    with (
        BackgroundServer(config, telemetry=telemetry) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield RuntimeStub(channel), exporter


def _request(language: str, code: str) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(job=pb.Job(id=uuid.uuid4().hex, language=language, code=code))


def _family(
    spans: tuple[ReadableSpan, ...], job_id: str
) -> tuple[ReadableSpan, list[ReadableSpan]]:
    [job] = [
        s
        for s in spans
        if s.name == "job" and (s.attributes or {}).get("gristmill.job.id") == job_id
    ]
    assert job.context is not None
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == job.context.span_id
    ]
    return job, sorted(children, key=lambda span: span.start_time or 0)


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_job_continues_the_callers_trace_with_a_span_per_phase(traced):
    stub, exporter = traced
    request = _request("bash", "echo hi\n")
    outcome = stub.Execute(request, metadata=[("traceparent", TRACEPARENT)], timeout=60)
    assert outcome.verdict == pb.SUCCESS, outcome
    spans = exporter.get_finished_spans()
    [call] = [s for s in spans if s.name == "gristmill.v1.Runtime/Execute"]
    assert call.kind is SpanKind.SERVER and call.context is not None
    assert call.parent is not None and call.parent.is_remote
    assert format(call.parent.span_id, "016x") == CALLER_SPAN_ID
    assert format(call.context.trace_id, "032x") == TRACE_ID
    job, phases = _family(spans, request.job.id)
    assert job.parent is not None and job.parent.span_id == call.context.span_id
    assert [p.name for p in phases] == ["queue", "prepare", "sandbox_setup", "run"]
    assert all(format(p.context.trace_id, "032x") == TRACE_ID for p in phases if p.context)
    attributes = job.attributes or {}
    assert attributes["gristmill.verdict"] == "SUCCESS"
    assert attributes["gristmill.job.language"] == "bash"
    assert attributes["gristmill.tenant"] == "anonymous"
    # Phases follow one another within the job's span.
    for earlier, later in itertools.pairwise(phases):
        assert earlier.end_time is not None and later.start_time is not None
        assert earlier.end_time <= later.start_time
    first, last = phases[0].start_time, phases[-1].end_time
    assert job.start_time is not None and job.end_time is not None
    assert first is not None and last is not None
    assert job.start_time <= first and last <= job.end_time


def test_a_streamed_compiled_job_has_its_build_phase(traced):
    stub, exporter = traced
    request = _request("c", c_job())
    events = list(stub.ExecuteStream(request, metadata=[("traceparent", TRACEPARENT)], timeout=120))
    assert events[-1].outcome.verdict == pb.SUCCESS, events[-1]
    spans = exporter.get_finished_spans()
    [call] = [s for s in spans if s.name == "gristmill.v1.Runtime/ExecuteStream"]
    job, phases = _family(spans, request.job.id)
    assert call.context is not None and job.parent is not None
    assert job.parent.span_id == call.context.span_id
    assert [p.name for p in phases] == ["queue", "build", "prepare", "sandbox_setup", "run"]


def test_without_a_traceparent_the_call_starts_a_trace(traced):
    stub, exporter = traced
    request = _request("bash", "true\n")
    assert stub.Execute(request, timeout=60).verdict == pb.SUCCESS
    spans = exporter.get_finished_spans()
    [call] = [s for s in spans if s.name == "gristmill.v1.Runtime/Execute"]
    assert call.parent is None
    job, _ = _family(spans, request.job.id)
    assert call.context is not None and job.context is not None
    assert job.context.trace_id == call.context.trace_id


def test_a_refused_call_has_an_error_span_and_no_job(traced):
    stub, exporter = traced
    with pytest.raises(grpc.RpcError):
        stub.Execute(_request("cobol", "x"), metadata=[("traceparent", TRACEPARENT)], timeout=60)
    # The client has its status as soon as the handler aborts; the span ends just after.
    deadline = time.monotonic() + 30
    while not (calls := _named(exporter, "gristmill.v1.Runtime/Execute")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [call] = calls
    assert not call.status.is_ok
    assert not [s for s in exporter.get_finished_spans() if s.name == "job"]


def test_tracing_off_loads_no_sdk_and_adds_no_interceptor():
    """Off is free: a server without an OTLP endpoint never imports the SDK."""
    program = (
        "import sys, tempfile\n"
        "from gristmill.config import load_config\n"
        "from gristmill.observability import Telemetry\n"
        "telemetry = Telemetry(load_config(environ={}).telemetry)\n"
        "assert telemetry.interceptors() == [] and telemetry.tracing is None\n"
        "print(any(name.startswith('opentelemetry.sdk') for name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_a_stream_the_client_leaves_ends_its_spans_cleanly(traced, caplog):
    stub, exporter = traced
    request = _request("bash", "sleep 30\n")
    call = stub.ExecuteStream(request, metadata=[("traceparent", TRACEPARENT)], timeout=60)
    assert next(call).HasField("accepted")
    call.cancel()
    deadline = time.monotonic() + 30
    while not [s for s in exporter.get_finished_spans() if s.name == "job"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job, _ = _family(exporter.get_finished_spans(), request.job.id)
    assert (job.attributes or {})["gristmill.verdict"] == "CANCELLED"
    assert _named(exporter, "gristmill.v1.Runtime/ExecuteStream")
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]
