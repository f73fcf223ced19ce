"""The client library: request building, retries under one job id, the asyncio twin."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
from dataclasses import dataclass, field

import grpc
import pytest

from gristmill.client import AsyncClient, Client, RetryPolicy, execute_request, outcome_result
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb


def test_request_carries_exact_json_args_and_a_fresh_id():
    first = execute_request("python", "code", {"big": 2**80 + 1})
    second = execute_request("python", "code")
    assert json.loads(first.job.args_json) == {"big": 2**80 + 1}
    assert not first.job.HasField("args")
    assert first.job.id and first.job.id != second.job.id


def test_request_encodes_text_files():
    request = execute_request("python", "code", files={"data/a.txt": "héllo", "b.bin": b"\0"})
    assert {f.path: f.content for f in request.job.files} == {
        "data/a.txt": "héllo".encode(),
        "b.bin": b"\0",
    }


def test_outcome_result_decodes_json_and_none():
    assert outcome_result(pb.Outcome(result_json='{"a": [1]}')) == {"a": [1]}
    assert outcome_result(pb.Outcome()) is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class _RecordingPolicy(RetryPolicy):
    """Retries often and quickly; `failed` is set once the first attempt has failed."""

    max_attempts: int = 200
    initial_backoff_s: float = 0.02
    max_backoff_s: float = 0.1
    failed: threading.Event = field(default_factory=threading.Event)
    codes: list[grpc.StatusCode] = field(default_factory=list)

    def pause_s(self, error, attempt, deadline):
        self.codes.append(error.code())
        self.failed.set()
        return super().pause_s(error, attempt, deadline)


def test_client_retries_unavailable_until_the_server_is_up(fake_server):
    address = f"127.0.0.1:{_free_port()}"
    policy = _RecordingPolicy()
    with Client(address, retry=policy) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.execute, "fake", "now", {"n": 1}, job_id="retried")
        assert policy.failed.wait(30)
        _, runner = fake_server(address=address)
        outcome = pending.result()
    assert outcome.verdict == pb.SUCCESS
    assert set(policy.codes) == {grpc.StatusCode.UNAVAILABLE}
    assert [job.id for job in runner.calls] == ["retried"]


def test_client_does_not_retry_a_refused_request(fake_server):
    address, _ = fake_server()
    policy = _RecordingPolicy()
    with Client(address, retry=policy) as client, pytest.raises(grpc.RpcError) as refused:
        client.execute("cobol", "now")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert policy.codes == [grpc.StatusCode.INVALID_ARGUMENT]


def test_client_gives_up_when_its_deadline_passes():
    policy = _RecordingPolicy()
    client = Client(f"127.0.0.1:{_free_port()}", retry=policy)
    with client, pytest.raises(grpc.RpcError) as failed:
        client.execute("fake", "now", timeout_s=0.5)
    assert failed.value.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


async def test_async_client_executes_streams_and_cancels(fake_server):
    address, _ = fake_server()
    async with AsyncClient(address) as client:
        outcome = await client.execute("fake", "now", {"x": [1, 2]})
        kinds = [e.WhichOneof("event") async for e in client.execute_stream("fake", "now")]
        cancelled = await client.cancel("nothing-running")
        listing = await client.list_runtimes()
        schema = await client.describe("fake", "code")
    assert outcome_result(outcome) == {"x": [1, 2]}
    assert kinds[0] == "accepted" and kinds[-1] == "outcome"
    assert cancelled is False
    assert "fake" in {runtime.language for runtime in listing.runtimes}
    assert schema["type"] == "object"


def test_background_server_binds_the_port_it_reports(real_config):
    with BackgroundServer(real_config()) as address:
        host, _, port = address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
