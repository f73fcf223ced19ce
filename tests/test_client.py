"""The client library: request building, retries under one job id; every test of a call
runs over both clients (`connect`), the blocking one being generated from the asyncio one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from gristmill.client import (
    SERVICE_CONFIG,
    AsyncClient,
    Client,
    Credentials,
    Outcome,
    RetryPolicy,
    Verdict,
    execute_request,
    outcome_result,
)
from gristmill.client.retry import Deadline
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from scripts import unasync_client
from tests.conftest import FakeRunner


class _OnALoop:
    """An `AsyncClient` driven from blocking code, its calls run on an event loop of its
    own, so that one test drives either client."""

    def __init__(self, target: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client: AsyncClient = self._run(self._connect(target, options))

    @staticmethod
    async def _connect(target: str, options: dict[str, Any]) -> AsyncClient:
        return AsyncClient(target, **options)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            answer = method(*args, **kwargs)
            if inspect.isasyncgen(answer):
                return iter(self._run(_collected(answer)))
            return self._run(answer)

        return call

    def __enter__(self) -> _OnALoop:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


async def _collected(events: Any) -> list[Any]:
    return [event async for event in events]


@pytest.fixture(params=["blocking", "asyncio"])
def connect(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Makes a client of either kind: `connect(target, retry=..., credentials=...)`."""
    return Client if request.param == "blocking" else _OnALoop


def test_the_blocking_client_is_generated_from_the_asyncio_one():
    """Edit gristmill/client/_async/client.py, then run scripts/unasync_client.py."""
    assert unasync_client.TARGET.read_text() == unasync_client.generated()


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
    wait_for_ready: bool = False
    failed: threading.Event = field(default_factory=threading.Event)
    codes: list[grpc.StatusCode] = field(default_factory=list)

    def pause_s(self, error, attempt, deadline):
        self.codes.append(error.code())
        self.failed.set()
        return super().pause_s(error, attempt, deadline)


def test_client_retries_unavailable_until_the_server_is_up(fake_server, connect):
    address = f"127.0.0.1:{_free_port()}"
    policy = _RecordingPolicy()
    with connect(address, retry=policy) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.execute, "fake", "now", {"n": 1}, job_id="retried")
        assert policy.failed.wait(30)
        _, runner = fake_server(address=address)
        outcome = pending.result()
    assert outcome.verdict == pb.SUCCESS
    assert set(policy.codes) == {grpc.StatusCode.UNAVAILABLE}
    assert [job.id for job in runner.calls] == ["retried"]


def test_client_does_not_retry_a_refused_request(fake_server, connect):
    address, _ = fake_server()
    policy = _RecordingPolicy()
    with connect(address, retry=policy) as client, pytest.raises(grpc.RpcError) as refused:
        client.execute("cobol", "now")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert policy.codes == [grpc.StatusCode.INVALID_ARGUMENT]


def test_client_gives_up_when_its_deadline_passes(connect):
    policy = _RecordingPolicy()
    client = connect(f"127.0.0.1:{_free_port()}", retry=policy)
    with client, pytest.raises(grpc.RpcError) as failed:
        client.execute("fake", "now", timeout_s=0.5)
    assert failed.value.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def test_a_client_executes_streams_cancels_lists_and_describes(fake_server, connect):
    address, _ = fake_server()
    with connect(address) as client:
        outcome = client.execute("fake", "now", {"x": [1, 2]})
        kinds = [e.WhichOneof("event") for e in client.execute_stream("fake", "now")]
        cancelled = client.cancel("nothing-running")
        listing = client.list_runtimes()
        schema = client.describe("fake", "code")
    assert outcome_result(outcome) == {"x": [1, 2]}
    assert kinds[0] == "accepted" and kinds[-1] == "outcome"
    assert cancelled is False
    assert "fake" in {runtime.language for runtime in listing.runtimes}
    assert schema["type"] == "object"


def test_background_server_binds_the_port_it_reports(real_config):
    with BackgroundServer(real_config()) as address:
        host, _, port = address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0


def test_verdict_enum_matches_the_proto_enum():
    assert {v.name: v.value for v in Verdict} == dict(pb.Verdict.items())


def test_outcome_is_typed_with_the_result_decoded():
    message = pb.Outcome(
        job_id="j",
        verdict=pb.ERROR,
        result_json="",
        error=pb.JobError(name="ZeroDivisionError", message="division by zero"),
        stdout=pb.Output(data="héllo\n".encode()),
        stderr=pb.Output(data=b"\xff"),
    )
    outcome = Outcome.from_proto(message)
    assert outcome.verdict is Verdict.ERROR and not outcome.ok
    assert outcome.result is None
    assert outcome.error is not None and outcome.error.name == "ZeroDivisionError"
    assert outcome.stdout == "héllo\n" and outcome.stderr == "\ufffd"
    assert outcome.lockfile is None
    ok = Outcome.from_proto(pb.Outcome(verdict=pb.SUCCESS, result_json='{"a": [1]}'))
    assert ok.ok and ok.result == {"a": [1]}


def test_run_returns_a_typed_outcome(fake_server, connect):
    address, _ = fake_server()
    with connect(address) as client:
        outcome = client.run("fake", "now", {"n": 1}, job_id="typed")
    assert outcome.verdict is Verdict.SUCCESS
    assert outcome.result == {"n": 1}
    assert outcome.job_id == "typed"


def test_a_misspelt_keyword_is_refused_at_once(fake_server, connect):
    address, _ = fake_server()
    with connect(address) as client, pytest.raises(TypeError):
        client.execute("fake", "now", job_idd="x")


def test_service_config_retries_unavailable_and_waits_for_ready():
    method = SERVICE_CONFIG["methodConfig"][0]
    assert method["waitForReady"] is True
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    options = dict(RetryPolicy().channel_options())
    assert json.loads(str(options["grpc.service_config"])) == SERVICE_CONFIG


def test_a_call_waits_for_a_server_that_starts_late(fake_server, connect):
    """wait_for_ready by default: a restarting server delays a call, never fails it."""
    address = f"127.0.0.1:{_free_port()}"
    with connect(address) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.run, "fake", "now", {"n": 1}, timeout_s=120)
        threading.Event().wait(1.0)
        assert not pending.done()
        fake_server(address=address)
        assert pending.result().ok


def test_the_same_client_survives_a_server_restart(
    make_config, fake_runtimes, fake_profiles, connect
):
    config = make_config(
        address=f"127.0.0.1:{_free_port()}", runtimes_dir=fake_runtimes, profiles_dir=fake_profiles
    )
    with connect(config.address) as client:
        for round_ in range(2):
            with BackgroundServer(config, runner=FakeRunner()):
                assert client.run("fake", "now", {"round": round_}, timeout_s=120).ok


def _overloaded_once(code: grpc.StatusCode, pushback_ms: str | None):
    class Refused(grpc.RpcError):  # type: ignore[misc]
        def code(self):
            return code

        def trailing_metadata(self):
            return [("grpc-retry-pushback-ms", pushback_ms)] if pushback_ms else []

    return Refused()


def test_resource_exhausted_is_retried_only_when_asked_after_the_servers_pause():
    deadline = Deadline(None)
    full = _overloaded_once(grpc.StatusCode.RESOURCE_EXHAUSTED, "250")
    assert RetryPolicy().pause_s(full, 1, deadline) is None
    assert RetryPolicy(retry_resource_exhausted=True).pause_s(full, 1, deadline) == 0.25
    # Without a pushback or a QuotaFailure it is a message over a size limit, not a
    # full server (tests/server/test_contract.py): retrying cannot help.
    too_large = _overloaded_once(grpc.StatusCode.RESOURCE_EXHAUSTED, None)
    assert RetryPolicy(retry_resource_exhausted=True).pause_s(too_large, 1, deadline) is None


def test_a_full_server_is_retried_until_a_slot_frees(fake_server, connect):
    address, runner = fake_server(max_concurrent_jobs=1, max_queued_jobs=0)
    policy = RetryPolicy(retry_resource_exhausted=True, max_attempts=1000, max_backoff_s=0.05)
    with connect(address, retry=policy) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.execute, "fake", "gate", job_id="holds-the-slot")
        for _ in range(3000):
            if runner.calls:
                break
            threading.Event().wait(0.01)
        threading.Timer(0.5, runner.gate.set).start()
        assert client.run("fake", "now", job_id="waits-its-turn", timeout_s=60).ok
        assert running.result().verdict == pb.SUCCESS


class _MetadataRecorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers every method of the service with an empty message, recording each call's
    metadata (the keys in `KEYS`) by method name."""

    KEYS = ("authorization", "traceparent", "tenant")

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[str, str]]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        name = details.method.rpartition("/")[2]
        method = pb.DESCRIPTOR.services_by_name["Runtime"].methods_by_name[name]
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        self.seen[name] = [(k, v) for k, v in details.invocation_metadata if k in self.KEYS]
        if name == "ExecuteStream":
            return grpc.unary_stream_rpc_method_handler(
                lambda _request, _context: iter([pb.ExecuteEvent()]),
                request.FromString,
                response.SerializeToString,
            )
        answer = (
            pb.DescribeResponse(parameters_schema_json="{}") if name == "Describe" else response()
        )
        return grpc.unary_unary_rpc_method_handler(
            lambda _request, _context: answer, request.FromString, response.SerializeToString
        )


@pytest.fixture
def metadata_recorder() -> Iterator[tuple[str, _MetadataRecorder]]:
    recorder = _MetadataRecorder()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2), handlers=[recorder])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", recorder
    server.stop(None)


def test_every_call_sends_its_metadata_beside_the_clients_own(metadata_recorder, connect):
    address, recorder = metadata_recorder
    ours = [
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tenant", "t"),
    ]
    with connect(address, credentials=Credentials(token="secret")) as client:
        client.run("fake", "now", metadata=ours)
        client.execute("fake", "now", metadata=ours)
        list(client.execute_stream("fake", "now", metadata=ours))
        client.cancel("job", metadata=ours)
        client.list_runtimes(metadata=ours)
        client.get_outcome("job", metadata=ours)
        client.describe("fake", "now", metadata=ours)
        client.resolve("fake", "now", metadata=ours)
    assert set(recorder.seen) == set(pb.DESCRIPTOR.services_by_name["Runtime"].methods_by_name)
    sent = sorted([("authorization", "Bearer secret"), *ours])
    assert all(sorted(seen) == sent for seen in recorder.seen.values()), recorder.seen
