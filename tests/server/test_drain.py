"""Drain: health NOT_SERVING first, new jobs UNAVAILABLE, jobs in flight finish within the
grace, the rest CANCELLED; and SIGTERM to a real `gristmill serve` during a real job."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gristmill.client import AsyncClient, Client, Credentials, RetryPolicy
from gristmill.server import start
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import FakeRunner, sandbox_work_dir

FAIL_FAST = RetryPolicy(wait_for_ready=False, max_attempts=1)
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


async def _health(address: str) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return response.status


async def _until(predicate, what: str) -> None:
    for _ in range(3000):
        if await predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_drain_refuses_new_jobs_lets_running_ones_finish_and_cancels_the_rest(
    make_config, fake_runtimes, fake_profiles
):
    runner = FakeRunner()
    config = make_config(runtimes_dir=fake_runtimes, profiles_dir=fake_profiles)
    server = await start(config, runner=runner)
    async with AsyncClient(server.address, retry=FAIL_FAST) as client:
        finishing = asyncio.ensure_future(client.execute("fake", "gate", job_id="finishing"))
        stuck = asyncio.ensure_future(client.execute("fake", "wait", job_id="stuck"))

        async def both_running() -> bool:
            return len(runner.calls) == 2

        await _until(both_running, "both jobs run")
        assert await _health(server.address) == SERVING
        stopping = asyncio.ensure_future(server.stop(grace_s=4.0))

        async def not_serving() -> bool:
            return bool(await _health(server.address) == NOT_SERVING)

        await _until(not_serving, "health turns NOT_SERVING")
        with pytest.raises(grpc.RpcError) as refused:
            await client.execute("fake", "now", job_id="too-late")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (refused.value.details() or "")
        runner.gate.set()
        assert (await finishing).verdict == pb.SUCCESS
        assert not stuck.done()  # it has the rest of the grace
        outcome = await stuck
        assert outcome.verdict == pb.CANCELLED
        await stopping
    assert sorted(job.id for job in runner.calls) == ["finishing", "stuck"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_serving(address: str, process: subprocess.Popen[bytes]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(1200):
            assert process.poll() is None, "the server exited"
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError("the server never served")


@pytest.fixture
def served(tmp_path):
    """`gristmill serve` in a process of its own over the real sandbox, with tokens."""
    processes: list[subprocess.Popen[bytes]] = []

    def serve(*flags: str) -> tuple[str, subprocess.Popen[bytes]]:
        address = f"127.0.0.1:{_free_port()}"
        log = (tmp_path / f"serve-{len(processes)}.log").open("wb")
        env = {**os.environ, "GRISTMILL_AUTH_TOKENS": "ops:drain-token"}
        process = subprocess.Popen(
            [sys.executable, "-m", "gristmill", "serve", "--address", address, *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        processes.append(process)
        _wait_serving(address, process)
        return address, process

    with sandbox_work_dir() as work_dir:
        yield lambda *flags: serve("--work-dir", str(work_dir), *flags)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


SLEEPER = 'seconds="$1"\necho started\nsleep "$seconds"\necho "slept $seconds"\n'


def _run_signalled(address: str, process: subprocess.Popen[bytes], seconds: float) -> pb.Outcome:
    """Runs a job that sleeps `seconds`, sends SIGTERM once it has started (its first
    output came), checks that new jobs are refused, and returns its outcome."""
    credentials = Credentials(token="drain-token")
    with Client(address, retry=FAIL_FAST, credentials=credentials) as client:
        events = client.execute_stream(
            "bash", SLEEPER, {"seconds": seconds}, limits=pb.Limits(wall_time_ms=60_000)
        )
        for event in events:
            assert not event.HasField("outcome"), event
            if event.HasField("stdout"):
                break
        process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as refused:
            for attempt in range(100):  # until the drain has begun
                client.execute("bash", "echo late", job_id=f"late-{attempt}", timeout_s=10)
                time.sleep(0.05)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        *_, last = events
    return last.outcome


def test_sigterm_during_a_job_lets_it_finish_within_the_grace(served):
    address, process = served("--drain-grace-s", "60")
    outcome = _run_signalled(address, process, 3)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome.stdout.data == b"started\nslept 3\n"
    assert outcome.tenant == "ops"
    assert process.wait(timeout=60) == 0


def test_sigterm_cancels_what_the_grace_does_not_cover(served):
    address, process = served("--drain-grace-s", "2")
    outcome = _run_signalled(address, process, 50)
    assert outcome.verdict == pb.CANCELLED, outcome
    assert outcome.stdout.data == b"started\n"
    assert process.wait(timeout=60) == 0


def test_a_second_sigterm_cuts_the_grace_short(served):
    address, process = served("--drain-grace-s", "600")
    credentials = Credentials(token="drain-token")
    with Client(address, retry=FAIL_FAST, credentials=credentials) as client:
        events = client.execute_stream("bash", SLEEPER, {"seconds": 50})
        next(e for e in events if e.HasField("stdout"))
        process.send_signal(signal.SIGTERM)
        health = grpc.insecure_channel(address)
        for _ in range(1200):  # until the drain has begun
            response = health_pb2_grpc.HealthStub(health).Check(health_pb2.HealthCheckRequest())
            if response.status == NOT_SERVING:
                break
            time.sleep(0.05)
        health.close()
        process.send_signal(signal.SIGTERM)
        *_, last = events
    assert last.outcome.verdict == pb.CANCELLED
    assert process.wait(timeout=60) == 0


def test_the_drain_is_logged_from_start_to_end(served, tmp_path):
    _, process = served("--drain-grace-s", "5")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    log = Path(tmp_path / "serve-0.log").read_text()
    assert log.index("server draining") < log.index("server drained") < log.index("server stopped")
    assert '"grace_s": 5' in log
