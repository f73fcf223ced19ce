"""The worker against a real PostgreSQL and servers over a scripted runner: claim, outcome
write-back, retries only for service failures, leases, fencing, cancellation, many servers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg

from gristmill.queue import JobRecord, Queue, Worker, WorkerConfig
from gristmill.v1 import runtime_pb2 as pb
from tests.queue.conftest import ScriptedServer

WAIT_S = 60.0


@contextlib.asynccontextmanager
async def running_worker(
    database: str, targets: Sequence[str], tracer: Any = None, **overrides: Any
) -> AsyncIterator[Worker]:
    settings: dict[str, Any] = {
        "lease_s": 10.0,
        "poll_s": 0.5,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "grace_s": 5.0,
        **overrides,
    }
    worker = Worker(
        WorkerConfig(conninfo=database, targets=tuple(targets), **settings), tracer=tracer
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, WAIT_S)


async def wait(queue: Queue, job_id: str) -> JobRecord:
    return await asyncio.to_thread(queue.wait, job_id, WAIT_S)


async def until(predicate: Any, timeout_s: float = WAIT_S) -> None:
    end = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.05)


def migrated_queue(database: str) -> Queue:
    queue = Queue(database)
    queue.migrate()
    return queue


async def test_a_job_runs_once_and_its_outcome_is_written_back(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo", {"n": 2**70}, tenant="t1")
        async with running_worker(database, [address]) as worker:
            job = await wait(queue, job_id)
    assert (job.state, job.verdict, job.result) == ("done", "SUCCESS", {"n": 2**70})
    assert (job.attempts, job.retries, job.stdout) == (1, 0, "out")
    assert runner.runs == {job_id: 1}
    assert worker.stats.recorded == 1


async def test_the_users_failures_are_outcomes_never_retried(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    verdicts = ["ERROR", "TIMEOUT", "COMPILE_ERROR", "MEMORY_LIMIT"]
    with migrated_queue(database) as queue:
        ids = [queue.enqueue("fake", f"verdict:{v}") for v in verdicts]
        async with running_worker(database, [address]):
            jobs = [await wait(queue, job_id) for job_id in ids]
    assert [job.verdict for job in jobs] == verdicts
    assert {(job.state, job.attempts, job.retries) for job in jobs} == {("done", 1, 0)}
    assert set(runner.runs.values()) == {1}


async def test_a_failing_service_is_retried_with_backoff_until_attempts_run_out(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "crash", max_attempts=3)
        async with running_worker(database, [address]):
            job = await wait(queue, job_id)
    assert (job.state, job.verdict, job.attempts, job.retries) == ("failed", None, 3, 3)
    assert job.last_error is not None and job.last_error.startswith("INTERNAL")
    assert runner.runs[job_id] == 3


async def test_an_unreachable_server_is_retried(database: str) -> None:
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo", max_attempts=2)
        async with running_worker(database, ["127.0.0.1:1"]):
            job = await wait(queue, job_id)
    assert (job.state, job.retries) == ("failed", 2)
    assert job.last_error is not None and job.last_error.startswith("UNAVAILABLE")


async def test_a_request_the_server_refuses_fails_at_once(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, _ = scripted_server()
    with migrated_queue(database) as queue:
        # A file outside the job's directory: INVALID_ARGUMENT. (A language no server
        # runs is never claimed: see test_routing.py.)
        job_id = queue.enqueue("fake", "x", files={"../escape": "x"})
        async with running_worker(database, [address]):
            job = await wait(queue, job_id)
    assert (job.state, job.attempts, job.retries) == ("failed", 1, 0)
    assert job.last_error is not None and job.last_error.startswith("INVALID_ARGUMENT")


async def test_heartbeats_keep_the_lease_of_a_job_longer_than_it(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "sleep:4")
        async with (
            running_worker(database, [address], lease_s=1.5, heartbeat_s=0.25),
            running_worker(database, [address], lease_s=1.5, heartbeat_s=0.25),
        ):
            job = await wait(queue, job_id)
    assert (job.state, job.verdict, job.retries) == ("done", "SUCCESS", 0)
    assert runner.runs[job_id] == 1


def _lose_a_worker(database: str, job_id: str) -> int:
    """Marks a job as claimed by a worker that vanished; returns its fencing token."""
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "update gristmill.queue set state = 'running', attempts = 1, leased_by = 'lost',"
            " lease_token = nextval('gristmill.lease_tokens'),"
            " lease_expires_at = now() - interval '1 second'"
            " where uid = gristmill.job_uid(%s) returning lease_token",
            (job_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_an_expired_lease_is_requeued_and_the_lost_claim_cannot_write(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo", {"a": 1})
        stale_token = _lose_a_worker(database, job_id)
        stale = queue.get(job_id)
        async with running_worker(database, [address]) as worker:
            job = await wait(queue, job_id)
            # The lost worker comes back with its outcome: the fencing token refuses it.
            late = pb.Outcome(job_id=job_id, verdict=pb.ERROR, detail="late")
            assert stale is not None and stale.lease_token == stale_token
            await worker._record(stale, late)
        assert worker.stats.reaped == 1 and worker.stats.fenced == 1
        after = queue.get(job_id)
    assert (job.state, job.verdict, job.attempts, job.retries) == ("done", "SUCCESS", 2, 1)
    assert job.last_error == "lease expired: worker lost lost"
    assert after is not None and (after.verdict, after.detail) == ("SUCCESS", job.detail)
    assert runner.runs[job_id] == 1


async def test_cancelling_a_running_job_reaches_the_servers_cancel(
    database: str, scripted_server: ScriptedServer
) -> None:
    first, runner_1 = scripted_server()
    second, runner_2 = scripted_server()
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "wait")
        async with running_worker(database, [first, second]):
            await until(lambda: job_id in runner_1.runs or job_id in runner_2.runs)
            assert queue.cancel(job_id) == "cancelling"
            job = await wait(queue, job_id)
    assert (job.state, job.verdict) == ("cancelled", "CANCELLED")
    assert job_id in runner_1.cancelled | runner_2.cancelled


async def test_cancelling_a_queued_job_is_immediate(database: str) -> None:
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "echo")
        assert queue.cancel(job_id) == "cancelled"
        assert queue.cancel("no-such-job") is None
        job = queue.wait(job_id, 1)
    assert (job.state, job.verdict, job.attempts) == ("cancelled", "CANCELLED", 0)


async def test_calls_are_spread_over_every_server(
    database: str, scripted_server: ScriptedServer
) -> None:
    servers = [scripted_server() for _ in range(2)]
    with migrated_queue(database) as queue:
        ids = [queue.enqueue("fake", "sleep:0.1", {"i": i}) for i in range(40)]
        async with running_worker(database, [address for address, _ in servers], concurrency=4):
            jobs = [await wait(queue, job_id) for job_id in ids]
    assert {job.verdict for job in jobs} == {"SUCCESS"}
    assert all(runner.runs for _, runner in servers), "round_robin used one server only"
    assert sum(sum(runner.runs.values()) for _, runner in servers) == 40


async def test_stopping_lets_jobs_finish_and_releases_those_past_the_grace_period(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        short = queue.enqueue("fake", "sleep:1")
        endless = queue.enqueue("fake", "wait")
        async with running_worker(database, [address], grace_s=3.0) as worker:
            await until(lambda: len(runner.runs) == 2)
        finished, released = queue.get(short), queue.get(endless)
    assert finished is not None and (finished.state, finished.verdict) == ("done", "SUCCESS")
    assert released is not None and (released.state, released.attempts) == ("queued", 0)
    assert worker.stats.released == 1
    await until(lambda: endless in runner.cancelled)  # the abandoned run was killed


async def test_new_jobs_wake_an_idle_worker_without_waiting_for_the_poll(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, _ = scripted_server()
    with migrated_queue(database) as queue:
        async with running_worker(database, [address], poll_s=30.0):
            await asyncio.sleep(0.5)  # the worker is idle, listening
            with psycopg.connect(database, autocommit=True) as conn:
                # A plain INSERT, as any client may write it, notifies too.
                row = conn.execute(
                    "insert into gristmill.jobs (language, code) values ('fake', 'x') returning id"
                ).fetchone()
            assert row is not None
            job = await asyncio.to_thread(queue.wait, row[0], 15)
    assert job.state == "done"


async def test_a_worker_whose_lease_passed_to_another_abandons_the_call_and_writes_nothing(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        job_id = queue.enqueue("fake", "wait")
        async with running_worker(database, [address], heartbeat_s=0.2) as worker:
            await until(lambda: job_id in runner.runs)
            with psycopg.connect(database, autocommit=True) as conn:
                # Another claim takes the job over (as after a reap and a re-claim).
                conn.execute(
                    "update gristmill.queue set lease_token = nextval('gristmill.lease_tokens'),"
                    " leased_by = 'thief' where uid = gristmill.job_uid(%s)",
                    (job_id,),
                )
            await until(lambda: worker.stats.fenced == 1)
            await until(lambda: job_id in runner.cancelled)  # the abandoned run was killed
        job = queue.get(job_id)
    assert job is not None and (job.state, job.verdict) == ("running", None)
    assert worker.stats.recorded == 0


async def test_a_full_server_is_backpressure_not_a_failure_of_the_job(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server(max_concurrent_jobs=1, max_queued_jobs=0)
    with migrated_queue(database) as queue:
        ids = [queue.enqueue("fake", "sleep:0.3", {"i": i}, max_attempts=1) for i in range(4)]
        async with running_worker(database, [address], concurrency=4) as worker:
            jobs = [await wait(queue, job_id) for job_id in ids]
    assert {(job.state, job.verdict, job.attempts) for job in jobs} == {("done", "SUCCESS", 1)}
    assert worker.stats.retried > 0  # RESOURCE_EXHAUSTED: back to the queue, attempt kept
    assert all(
        (job.last_error or "").startswith("RESOURCE_EXHAUSTED") for job in jobs if job.retries
    )
    assert set(runner.runs.values()) == {1}


async def test_higher_priority_first_and_nothing_before_its_run_after(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, _ = scripted_server()
    with migrated_queue(database) as queue:
        with psycopg.connect(database) as conn:
            row = conn.execute("select now() + interval '2 seconds'").fetchone()
        assert row is not None
        later = queue.enqueue("fake", "echo", {"n": "later"}, priority=100, run_after=row[0])
        low = queue.enqueue("fake", "echo", {"n": "low"})
        high = queue.enqueue("fake", "echo", {"n": "high"}, priority=5)
        # No prefetch: `started_at` is the claim, which a prefetch shares between two.
        async with running_worker(database, [address], concurrency=1, prefetch=0):
            jobs = {job_id: await wait(queue, job_id) for job_id in (later, low, high)}
    started = sorted(jobs, key=lambda job_id: jobs[job_id].started_at or 0)
    assert started == [high, low, later]
    assert (jobs[later].started_at or row[0]) >= row[0]
