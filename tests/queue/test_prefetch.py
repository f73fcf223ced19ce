"""The worker's prefetch against a real PostgreSQL and a server over the scripted runner:
a held job goes back to the queue for an idle worker instead of waiting for a slot,
and a held job whose lease passed is never run by the worker that held it."""

from __future__ import annotations

import psycopg

from gristmill.queue import Worker
from tests.queue.conftest import ScriptedServer
from tests.queue.test_worker import migrated_queue, running_worker, until, wait


def _leased_by(database: str, job_id: str) -> str:
    with psycopg.connect(database) as conn:
        row = conn.execute("select leased_by from gristmill.job(%s)", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_a_held_job_goes_to_an_idle_worker_instead_of_waiting_for_a_slot(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        slow = queue.enqueue("fake", "sleep:3")
        held = queue.enqueue("fake", "echo")
        async with running_worker(
            database, [address], concurrency=1, prefetch=1, prefetch_hold_s=0.3, worker_id="a"
        ) as a:
            await until(lambda: a.stats.claimed == 2)  # one running, one held
            assert a.stats.prefetched == 1
            async with running_worker(
                database, [address], concurrency=1, prefetch=0, worker_id="b"
            ) as b:
                job = await wait(queue, held)
                # Handed back while the slow one still ran, and run by the idle worker.
                assert slow in runner.runs and (await wait(queue, slow)).state == "done"
    assert job.state == "done" and runner.runs[held] == 1
    assert _leased_by(database, held) == "b"
    assert a.stats.handed_back == 1 and b.stats.claimed == 1
    assert job.attempts == 1  # a hand-back uses up no attempt


async def test_a_held_job_whose_lease_passed_is_not_run_twice(
    database: str, scripted_server: ScriptedServer
) -> None:
    """No heartbeats and no hand-back: the lease of the held job passes, the job goes to
    back to the queue, and the worker that held it drops it instead of running it."""
    address, runner = scripted_server()
    with migrated_queue(database) as queue:
        slow = queue.enqueue("fake", "sleep:2.5")
        held = queue.enqueue("fake", "echo")
        holder: Worker
        async with running_worker(
            database,
            [address],
            concurrency=1,
            prefetch=1,
            prefetch_hold_s=60,
            lease_s=1.5,
            heartbeat_s=60,
            worker_id="a",
        ) as holder:
            await until(lambda: holder.stats.claimed == 2)
            async with running_worker(
                database, [address], concurrency=1, prefetch=0, worker_id="b"
            ):
                job = await wait(queue, held)
                await until(lambda: holder.stats.fenced >= 2)  # slow's write, held's run
                await wait(queue, slow)
    # Once in all: by whichever worker claimed it again, under a new lease.
    assert job.state == "done" and runner.runs[held] == 1
