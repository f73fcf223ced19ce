"""The whole service through gRPC with the real executor and sandbox backend."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gristmill.client import Client, outcome_result
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb

SLEEPER = "import time\n\ndef main():\n    time.sleep(60)\n"


@pytest.fixture
def client(real_server):
    with Client(real_server) as client:
        yield client


def test_python_job_returns_mains_value(client):
    code = "def main(a: int, b: int):\n    print('adding')\n    return a + b\n"
    outcome = client.execute("python", code, {"a": 2**70, "b": 1}, timeout_s=60)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == 2**70 + 1
    assert outcome.stdout.data == b"adding\n"
    assert outcome.sandbox


def test_bash_job_runs(client):
    outcome = client.execute("bash", 'name="$1"\necho "hello $name"\n', {"name": "bash"})
    assert outcome.verdict == pb.SUCCESS, outcome
    assert b"hello bash" in outcome.stdout.data


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"language": "cobol"}, "job.language"),
        ({"limits": pb.Limits(memory_bytes=1 << 50)}, "job.limits.memory_bytes"),
        ({"args_json": "{"}, "job.args_json"),
        ({"language": "go", "script": pb.Script(argv=["a"])}, "job.script"),
        ({"script": pb.Script(), "args_json": "{}"}, "job.script"),
        ({"stdin": b"x" * (16 * 1024 * 1024 + 1)}, "job.stdin"),
        ({"output_files": ["../etc/passwd"]}, "job.output_files[0]"),
        ({"context": {"lower": "x"}}, "job.context"),
    ],
)
def test_bad_request_is_invalid_argument(real_server, request_fields, field):
    job = pb.Job(id=str(uuid.uuid4()), language="python", code="def main(): pass\n")
    job.MergeFrom(pb.Job(**request_fields))
    with grpc.insecure_channel(real_server) as channel:
        execute = channel.unary_unary(
            "/gristmill.v1.Runtime/Execute",
            request_serializer=pb.ExecuteRequest.SerializeToString,
            response_deserializer=pb.Outcome.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            execute(pb.ExecuteRequest(job=job), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()


def test_same_id_runs_once_and_answers_the_same_outcome(client):
    code = "import random\n\ndef main():\n    return random.random()\n"
    job_id = str(uuid.uuid4())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = [pool.submit(client.execute, "python", code, job_id=job_id) for _ in range(2)]
        outcomes = [future.result() for future in together]
    outcomes.append(client.execute("python", code, job_id=job_id))
    assert outcomes[0].verdict == pb.SUCCESS, outcomes[0]
    assert outcomes[0] == outcomes[1] == outcomes[2]


def _started_pid(events) -> int:
    for event in events:
        if event.HasField("started"):
            return int(event.started.pid)
    raise AssertionError("no started event")


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_cancel_kills_the_job_before_answering(client):
    job_id = str(uuid.uuid4())
    events = client.execute_stream("python", SLEEPER, job_id=job_id, timeout_s=120)
    pid = _started_pid(events)
    assert client.cancel(job_id) is True
    assert _gone(pid)
    outcome = next(event.outcome for event in events if event.HasField("outcome"))
    assert outcome.verdict == pb.CANCELLED


def test_client_deadline_bounds_the_job_and_its_outcome_arrives_in_time(client):
    job_id = str(uuid.uuid4())
    started = time.monotonic()
    outcome = client.execute("python", SLEEPER, job_id=job_id, timeout_s=3)
    assert outcome.verdict == pb.TIMEOUT
    assert time.monotonic() - started < 3
    # Joining the same id returns that run's end: killed, not slept out.
    outcome = client.execute("python", SLEEPER, job_id=job_id, timeout_s=50)
    assert outcome.verdict in (pb.CANCELLED, pb.TIMEOUT), outcome


def test_stream_events_follow_the_documented_order(client):
    code = "def main():\n    print('one')\n    return 1\n"
    events = list(client.execute_stream("python", code, timeout_s=60))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "accepted" and kinds[-1] == "outcome"
    assert kinds.count("accepted") == kinds.count("outcome") == kinds.count("started") == 1
    started = kinds.index("started")
    assert all(kind == "phase" for kind in kinds[1:started])
    assert b"".join(e.stdout for e in events if e.HasField("stdout")) == b"one\n"
    assert events[-1].outcome.verdict == pb.SUCCESS


def test_list_runtimes_has_python_and_bash_and_the_sandbox(client):
    listing = client.list_runtimes(timeout_s=60)
    names = {runtime.language: runtime for runtime in listing.runtimes}
    assert names["python"].available
    assert ".py" in names["python"].file_extensions
    assert "bash" in names
    assert listing.sandbox.backend


def test_describe_gives_pythons_parameters(client):
    schema = client.describe("python", "def main(a: int, b: str = 'x'):\n    pass\n")
    assert schema["required"] == ["a"]
    assert schema["properties"]["a"]["type"] == "integer"


def test_health_check_is_serving(real_server):
    with grpc.insecure_channel(real_server) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_full_server_refuses_with_resource_exhausted(real_config):
    config = real_config(max_concurrent_jobs=1, max_queued_jobs=0)
    with BackgroundServer(config) as address, Client(address) as client:
        job_id = str(uuid.uuid4())
        events = client.execute_stream("python", SLEEPER, job_id=job_id, timeout_s=120)
        _started_pid(events)
        with pytest.raises(grpc.RpcError) as refused:
            client.execute("python", "def main():\n    return 1\n", timeout_s=60)
        client.cancel(job_id)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_result_larger_than_grpcs_default_message_reaches_the_client(client):
    code = "def main():\n    return 'x' * (10 * 1024 * 1024)\n"
    outcome = client.execute("python", code, timeout_s=60)
    assert outcome.verdict == pb.SUCCESS
    assert len(outcome_result(outcome)) == 10 * 1024 * 1024


def test_time_spent_queued_still_leaves_room_for_a_timeout_outcome(real_config):
    config = real_config(max_concurrent_jobs=1)
    blocking = "import time\n\ndef main():\n    time.sleep(1.5)\n"
    with (
        BackgroundServer(config) as address,
        Client(address) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        blocker = pool.submit(client.execute, "python", blocking)
        time.sleep(0.3)
        outcome = client.execute("python", SLEEPER, timeout_s=3)
        assert outcome.verdict == pb.TIMEOUT
        assert blocker.result().verdict == pb.SUCCESS
