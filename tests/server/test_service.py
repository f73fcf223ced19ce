"""The servicer, the job table and admission over gRPC, with a fake runner as the executor."""

from __future__ import annotations

import concurrent.futures
import json
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gristmill.client import Client
from gristmill.v1 import runtime_pb2 as pb


def _wait_until_running(runner, count: int = 1) -> None:
    """Blocks until the fake runner has been called `count` times (the job is in flight)."""
    for _ in range(3000):
        if len(runner.calls) >= count:
            return
        time.sleep(0.01)
    raise AssertionError("the job never started")


def test_execute_answers_with_the_runners_outcome(fake_server):
    address, _ = fake_server()
    with Client(address) as client:
        outcome = client.execute("fake", "now", {"n": 2**64 + 1}, job_id="job-1")
    assert outcome.verdict == pb.SUCCESS
    assert outcome.job_id == "job-1"
    assert json.loads(outcome.result_json) == {"n": 2**64 + 1}
    assert outcome.sandbox == "fake"
    assert outcome.usage.HasField("phases")


def test_same_id_in_flight_joins_the_run_and_runs_once(fake_server):
    address, runner = fake_server()
    with Client(address) as client, concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.execute, "fake", "gate", job_id="dup")
        _wait_until_running(runner)
        second = pool.submit(client.execute, "fake", "gate", job_id="dup")
        runner.gate.set()
        outcomes = [first.result(), second.result()]
    assert len(runner.calls) == 1
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].verdict == pb.SUCCESS


def test_same_id_after_it_finished_gets_the_same_outcome_without_running(fake_server):
    address, runner = fake_server()
    with Client(address) as client:
        first = client.execute("fake", "now", {"x": 1}, job_id="again")
        second = client.execute("fake", "now", {"x": 1}, job_id="again")
    assert len(runner.calls) == 1
    assert first == second


def test_finished_job_is_forgotten_after_the_ttl(fake_server):
    address, runner = fake_server(recent_jobs_ttl_s=0)
    with Client(address) as client:
        client.execute("fake", "now", job_id="short-lived")
        for _ in range(3000):
            if client.execute("fake", "now", job_id="short-lived").detail == "run 2":
                break
    assert len(runner.calls) >= 2


def test_stream_events_come_in_the_documented_order(fake_server):
    address, _ = fake_server()
    with Client(address) as client:
        events = list(client.execute_stream("fake", "now", job_id="streamed"))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds == ["accepted", "phase", "started", "stdout", "stdout", "outcome"]
    assert events[0].accepted == pb.Accepted(job_id="streamed", deduplicated=False)
    assert [e.stdout for e in events if e.HasField("stdout")] == [b"out-1", b"out-2"]
    assert events[-1].outcome.verdict == pb.SUCCESS


def test_joining_stream_gets_past_events_then_live_ones(fake_server):
    address, runner = fake_server()
    with Client(address) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: list(client.execute_stream("fake", "gate", job_id="shared")))
        _wait_until_running(runner)
        joined = client.execute_stream("fake", "gate", job_id="shared")
        accepted = next(joined)
        runner.gate.set()
        rest = list(joined)
        first_events = first.result()
    assert accepted.accepted.deduplicated
    assert rest == first_events[1:]


def test_server_over_capacity_refuses_at_once(fake_server):
    address, runner = fake_server(max_concurrent_jobs=1, max_queued_jobs=0)
    with Client(address) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.execute, "fake", "gate", job_id="holds-the-slot")
        _wait_until_running(runner)
        with pytest.raises(grpc.RpcError) as refused:
            client.execute("fake", "now", job_id="one-too-many")
        runner.gate.set()
        assert running.result().verdict == pb.SUCCESS
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_queued_job_runs_once_a_slot_frees(fake_server):
    address, runner = fake_server(max_concurrent_jobs=1, max_queued_jobs=1)
    with Client(address) as client, concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.execute, "fake", "gate", job_id="first")
        _wait_until_running(runner)
        queued = pool.submit(client.execute, "fake", "now", job_id="queued")
        runner.gate.set()
        assert queued.result().verdict == pb.SUCCESS
        assert first.result().verdict == pb.SUCCESS
    assert [job.id for job in runner.calls] == ["first", "queued"]


def test_cancel_returns_once_the_run_is_over(fake_server):
    address, runner = fake_server()
    with Client(address) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.execute, "fake", "wait", job_id="to-cancel")
        _wait_until_running(runner)
        assert client.cancel("to-cancel") is True
        assert runner.finished == ["to-cancel"]
        assert running.result().verdict == pb.CANCELLED


def test_cancel_of_no_running_job_says_so(fake_server):
    address, _ = fake_server()
    with Client(address) as client:
        client.execute("fake", "now", job_id="done-already")
        assert client.cancel("done-already") is False
        assert client.cancel("never-seen") is False


def test_client_deadline_passing_cancels_the_job_and_a_retry_runs_it_again(fake_server):
    address, runner = fake_server()
    with Client(address) as client:
        with pytest.raises(grpc.RpcError) as expired:
            client.execute("fake", "wait", job_id="impatient", timeout_s=0.5)
        assert runner.cancelled.wait(30)
        # Nobody received the abandoned run's outcome: the worker's retry runs the job.
        assert client.execute("fake", "now", job_id="impatient").verdict == pb.SUCCESS
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(runner.calls) == 2


def test_a_job_cancelled_by_cancel_keeps_its_outcome(fake_server):
    address, runner = fake_server()
    with Client(address) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.execute, "fake", "wait", job_id="stopped")
        _wait_until_running(runner)
        assert client.cancel("stopped") is True
        assert waiting.result(30).verdict == pb.CANCELLED
        assert client.execute("fake", "wait", job_id="stopped").verdict == pb.CANCELLED
    assert len(runner.calls) == 1


def test_client_deadline_reaches_the_job(fake_server):
    address, runner = fake_server()
    with Client(address) as client:
        sent = time.monotonic()
        client.execute("fake", "now", limits=pb.Limits(wall_time_ms=600_000), timeout_s=5)
    deadline = runner.calls[0].deadline
    assert deadline is not None
    # gRPC rounds the deadline it passes on; a few milliseconds either way.
    assert sent < deadline <= sent + 5.1


def test_zero_limits_take_the_servers_defaults(fake_server):
    address, runner = fake_server(**{"default_limits.memory_bytes": 123 * 1024 * 1024})
    with Client(address) as client:
        client.execute("fake", "now", limits=pb.Limits(processes=7))
    limits = runner.calls[0].limits
    assert (limits.memory_bytes, limits.processes) == (123 * 1024 * 1024, 7)


def test_service_failure_is_internal_and_a_retry_runs_again(fake_server):
    address, runner = fake_server()
    with Client(address) as client:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as failed:
                client.execute("fake", "crash", job_id="crashes")
            assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert len(runner.calls) == 2


def _job(**fields) -> pb.Job:
    return pb.Job(**{"id": "bad-request", "language": "fake", "code": "now", **fields})


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (_job(language="cobol"), "job.language"),
        (_job(id=""), "job.id"),
        (_job(id="x" * 129), "job.id"),
        (_job(id="no spaces"), "job.id"),
        (_job(args_json="{not json"), "job.args_json"),
        (_job(args_json="[1, 2]"), "job.args_json"),
        (_job(args_json="{}", args={"a": 1}), "job.args_json"),
        (_job(limits=pb.Limits(memory_bytes=1 << 40)), "job.limits.memory_bytes"),
        (_job(limits=pb.Limits(wall_time_ms=10**9)), "job.limits.wall_time_ms"),
        (_job(limits=pb.Limits(network=True)), "job.limits.network"),
        (_job(files=[pb.File(path="../escape")]), "job.files[0].path"),
        (_job(files=[pb.File(path="/etc/passwd")]), "job.files[0].path"),
        (_job(env={"GRISTMILL_SECRET": "x"}), "job.env"),
        (_job(env={"1BAD": "x"}), "job.env"),
        (_job(entry_point="main; rm -rf /"), "job.entry_point"),
    ],
)
def test_malformed_request_is_invalid_argument_naming_the_field(fake_server, job, field):
    address, runner = fake_server()
    with grpc.insecure_channel(address) as channel:
        execute = channel.unary_unary(
            "/gristmill.v1.Runtime/Execute",
            request_serializer=pb.ExecuteRequest.SerializeToString,
            response_deserializer=pb.Outcome.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            execute(pb.ExecuteRequest(job=job))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()
    assert runner.calls == []


def test_language_without_its_toolchain_is_failed_precondition(fake_server):
    address, _ = fake_server()
    with Client(address) as client, pytest.raises(grpc.RpcError) as refused:
        client.execute("missing", "now")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_list_runtimes_tells_availability_and_the_sandbox(fake_server):
    address, _ = fake_server()
    with Client(address) as client:
        listing = client.list_runtimes()
    by_name = {runtime.language: runtime for runtime in listing.runtimes}
    assert by_name["fake"].available
    assert by_name["fake"].toolchain_version == "1.0"
    assert list(by_name["fake"].file_extensions) == [".fake"]
    assert by_name["fake"].default_entry_point == "main"
    assert not by_name["missing"].available
    # Not an operator: the path's last component only (tests/server/test_access.py).
    assert "…/toolchain" in by_name["missing"].unavailable_reason
    assert listing.sandbox.backend == "fake"


def test_list_runtimes_names_the_databases_never_their_credentials(fake_server):
    address, _ = fake_server(
        **{
            "databases.reports.dsn": "host=/run/db dbname=r password=hunter2",
            "databases.local.kind": "sqlite",
            "databases.local.path": "/srv/local.sqlite",
        }
    )
    with Client(address) as client:
        listing = client.list_runtimes()
    assert [(d.name, d.kind) for d in listing.databases] == [
        ("local", "sqlite"),
        ("reports", "postgresql"),
    ]
    assert b"hunter2" not in listing.SerializeToString()
    assert b"/srv/local.sqlite" not in listing.SerializeToString()


def test_describe_answers_the_plugins_schema(fake_server):
    address, _ = fake_server()
    with Client(address) as client:
        schema = client.describe("fake", "anything")
        with pytest.raises(grpc.RpcError) as unknown:
            client.describe("cobol", "anything")
    assert schema == {"type": "object", "properties": {}, "required": []}
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_service_says_serving(fake_server):
    address, _ = fake_server()
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "gristmill.v1.Runtime"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_runtime_and_health_services(fake_server):
    address, _ = fake_server()
    with grpc.insecure_channel(address) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"gristmill.v1.Runtime", "grpc.health.v1.Health"} <= set(services)


def test_an_id_in_use_by_a_different_job_is_refused(fake_server):
    address, runner = fake_server()
    with Client(address) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.execute, "fake", "wait", job_id="taken")
        _wait_until_running(runner)
        with pytest.raises(grpc.RpcError) as refused:
            client.execute("fake", "now", job_id="taken")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "job.id" in (refused.value.details() or "")
        client.cancel("taken")
        running.result()
    assert len(runner.calls) == 1
