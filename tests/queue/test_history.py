"""The live queue apart from the history (migration 4), against a real PostgreSQL: the
upgrade from version 3 with rows in every state, ids kept (producers' text ids and
uuids), retention dropping a day of history while a worker runs, scheduled jobs kept out
of the ready index until due, batched write-back under the fencing token, batched
enqueue with one notification, and HOT updates of the live rows.

Everything is asserted on what the database holds, never on a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from gristmill.queue import Queue, migrate
from gristmill.queue.queue import NewJob
from gristmill.v1 import runtime_pb2 as pb
from tests.queue.conftest import ScriptedServer, finish_jobs
from tests.queue.test_worker import running_worker, until, wait

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def conn(database: str) -> Iterator[Conn]:
    migrate(database)
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


def claim(conn: Conn, slots: int = 10) -> list[str]:
    rows = conn.execute("select id from gristmill.claim('test', %s, 30)", (slots,)).fetchall()
    return [str(row[0]) for row in rows]


def test_rows_in_every_state_keep_their_ids_and_states_through_the_upgrade(
    database: str,
) -> None:
    assert migrate(database, target=3) == [1, 2, 3]
    states = ("queued", "running", "done", "failed", "cancelled")
    with psycopg.connect(database, autocommit=True) as conn:
        for state in states:
            conn.execute(
                "insert into gristmill.jobs (id, language, code, tenant, state, verdict,"
                " result, finished_at) values (%s, 'fake', 'x', 't', %s, %s, %s,"
                " case when %s in ('queued', 'running') then null"
                "      else now() - interval '2 days' end)",
                (
                    f"job-{state}",
                    state,
                    "SUCCESS" if state == "done" else None,
                    '{"r": 1}' if state == "done" else None,
                    state,
                ),
            )
        later = conn.execute(
            "select gristmill.enqueue('fake', 'later', run_after => now() + interval '1 hour')"
        ).fetchone()
        upper = "0B9A3E8A-1C2D-4E5F-8A9B-0C1D2E3F4A5B"
        conn.execute("select gristmill.enqueue('fake', 'x', id => %s)", (upper,))
        generated = conn.execute("select gristmill.enqueue('fake', 'x')").fetchone()
        assert later is not None and generated is not None
        before: dict[str, str] = dict(
            conn.execute("select id, state from gristmill.jobs").fetchall()
        )

        assert migrate(database) == [4, 5, 6]

        after: dict[str, str] = dict(
            conn.execute("select id, state from gristmill.jobs").fetchall()
        )
        assert after == before  # the scheduled one reads as queued, as before
        live: dict[str, str] = dict(
            conn.execute("select uid::text, state from gristmill.queue").fetchall()
        )
        assert live[str(later[0])] == "scheduled"  # outside the ready index
        assert sorted(live.values()) == ["queued"] * 3 + ["running", "scheduled"]
        finished = conn.execute(
            "select coalesce(key, uid::text), state, result from gristmill.history"
        ).fetchall()
        assert sorted(finished) == [
            ("job-cancelled", "cancelled", None),
            ("job-done", "done", {"r": 1}),
            ("job-failed", "failed", None),
        ]
        # By id, live or finished, through the documented query and the indexed one.
        for job_id in (*before, upper):
            assert conn.execute(
                "select state from gristmill.jobs where id = %s", (job_id,)
            ).fetchone() == (before[job_id],)
            assert conn.execute("select state from gristmill.job(%s)", (job_id,)).fetchone() == (
                before[job_id],
            )
        # A generated id is the uuid itself, with no text beside it.
        assert conn.execute(
            "select key from gristmill.payloads where uid = %s::uuid", (generated[0],)
        ).fetchone() == (None,)
        assert sorted(claim(conn)) == sorted(["job-queued", upper, str(generated[0])])
    with Queue(database) as queue:
        assert queue.counts() == {
            "running": 4,
            "scheduled": 1,
            "done": 1,
            "failed": 1,
            "cancelled": 1,
        }
        assert queue.cancel("job-done") == "done"


def test_new_ids_are_time_ordered_uuids_and_a_producers_id_stays_unique(conn: Conn) -> None:
    ids = [
        str(conn.execute("select gristmill.enqueue('fake', 'x')").fetchone()[0])  # type: ignore[index]
        for _ in range(50)
    ]
    assert all(job_id[14] == "7" for job_id in ids)  # version 7
    # Time-ordered: the first 48 bits are the milliseconds (random within one).
    assert [job_id[:13] for job_id in ids] == sorted(job_id[:13] for job_id in ids)
    conn.execute("select gristmill.enqueue('fake', 'x', id => 'order:42')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("select gristmill.enqueue('fake', 'x', id => 'order:42')")
    claim(conn, 100)
    assert finish_jobs(conn, "id = 'order:42'") == 1
    # Finished and in the history: the id is still taken.
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("select gristmill.enqueue('fake', 'x', id => 'order:42')")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("select gristmill.enqueue('fake', 'x', id => 'no spaces')")


def test_a_scheduled_job_stays_out_of_the_ready_index_until_due(conn: Conn) -> None:
    conn.execute(
        "select gristmill.enqueue('fake', 'x', priority => 100, id => 'later',"
        " run_after => now() + interval '1 hour')"
    )
    conn.execute("select gristmill.enqueue('fake', 'x', id => 'now')")
    ready = "select count(*) from gristmill.queue where state = 'queued'"
    assert conn.execute(ready).fetchone() == (1,)
    assert claim(conn) == ["now"]
    assert claim(conn) == []
    # Its time comes: the next claim promotes it (in a batch) and takes it.
    conn.execute(
        "update gristmill.queue set run_after = now() - interval '1 second'"
        " where uid = gristmill.job_uid('later')"
    )
    assert claim(conn) == ["later"]


def test_a_retry_in_backoff_waits_scheduled(conn: Conn) -> None:
    conn.execute("select gristmill.enqueue('fake', 'x', id => 'flaky')")
    assert claim(conn) == ["flaky"]
    row = conn.execute(
        "select gristmill.retry(uid, lease_token, 'UNAVAILABLE: down', 3600)"
        " from gristmill.queue where uid = gristmill.job_uid('flaky')"
    ).fetchone()
    assert row == ("queued",)
    assert conn.execute("select state, retries, last_error from gristmill.queue").fetchone() == (
        "scheduled",
        1,
        "UNAVAILABLE: down",
    )
    assert claim(conn) == []


def test_one_write_back_statement_moves_a_batch_and_a_stale_token_moves_nothing(
    conn: Conn,
) -> None:
    for n in range(3):
        conn.execute("select gristmill.enqueue('fake', 'x', id => %s)", (f"j{n}",))
    claim(conn)
    rows = conn.execute("select uid, lease_token from gristmill.queue order by uid").fetchall()
    uids = [uid for uid, _ in rows]
    tokens = [token for _, token in rows]
    tokens[1] -= 1000  # a worker whose lease passed to another
    with conn.cursor() as cursor:
        cursor.execute("listen gristmill_done")
        moved = cursor.execute(
            "select gristmill.finish(%s::uuid[], %s::bigint[], %s::text[], %s::text[],"
            " %s::text[], null, null, null, null, null, null, null, null)",
            (uids, tokens, ["done"] * 3, ["SUCCESS"] * 3, ['{"ok": true}'] * 3),
        ).fetchall()
    assert sorted(uid for (uid,) in moved) == sorted([uids[0], uids[2]])
    assert conn.execute("select uid, state from gristmill.queue").fetchall() == [
        (uids[1], "running")
    ]
    notes = [note.payload for note in conn.notifies(timeout=1, stop_after=1)]
    assert len(notes) == 1  # one notification for the statement, with every id in it
    assert sorted(notes[0].split(" ")) == sorted(
        str(conn.execute("select id from gristmill.jobs where uid = %s", (uid,)).fetchone()[0])  # type: ignore[index]
        for uid in (uids[0], uids[2])
    )


async def test_the_worker_writes_outcomes_that_end_together_in_one_statement_fenced(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, _ = scripted_server()
    with Queue(database) as queue:
        queue.migrate()
        ids = queue.enqueue_many(NewJob("fake", "x", job_id=f"b{n}") for n in range(3))
        with psycopg.connect(database, autocommit=True) as conn:
            claim(conn)  # as a worker elsewhere would: running, under their tokens
            jobs = [queue.get(job_id) for job_id in ids]
            conn.execute(
                "update gristmill.queue set lease_token = lease_token + 1000"
                " where uid = gristmill.job_uid('b1')"
            )  # b1's lease passed on since: the token its worker holds is stale
        async with running_worker(database, [address]) as worker:
            outcome = pb.Outcome(verdict=pb.SUCCESS, result_json="7")
            await asyncio.gather(*(worker._record(job, outcome) for job in jobs if job))
            stats = worker.stats.as_dict()
        states = {job_id: queue.get(job_id) for job_id in ids}
    assert (stats["recorded"], stats["fenced"], stats["write_backs"]) == (2, 1, 1)
    assert {k: (v.state, v.result) for k, v in states.items() if v} == {
        "b0": ("done", 7),
        "b1": ("running", None),
        "b2": ("done", 7),
    }


def test_enqueue_many_copies_a_batch_in_and_notifies_once(database: str) -> None:
    with Queue(database) as queue, psycopg.connect(database, autocommit=True) as listener:
        queue.migrate()
        listener.execute("listen gristmill_jobs")
        jobs = [NewJob("fake", "x", {"n": n}, tenant=f"t{n % 3}") for n in range(500)]
        jobs.append(NewJob("fake", "x", job_id="given:1", priority=5, limits={"wall_time_ms": 9}))
        ids = queue.enqueue_many(jobs)
        notes = list(listener.notifies(timeout=1))
        assert len(notes) == 1
        assert len(ids) == 501 and len(set(ids)) == 501 and ids[-1] == "given:1"
        first, last = queue.get(ids[0]), queue.get("given:1")
        assert first is not None and (first.args, first.tenant) == ({"n": 0}, "t0")
        assert last is not None and (last.priority, last.limits) == (5, {"wall_time_ms": 9})
        assert queue.counts() == {"queued": 501}
        # A batch with one taken id is refused whole.
        with pytest.raises(psycopg.errors.UniqueViolation):
            queue.enqueue_many([NewJob("fake", "x"), NewJob("fake", "x", job_id="given:1")])
        assert queue.counts() == {"queued": 501}


def test_heartbeats_and_cancel_requests_are_hot_updates(conn: Conn) -> None:
    conn.execute("select gristmill.enqueue('fake', 'x', id => 'long')")
    claim(conn)
    stats = (
        "select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables"
        " where relid = 'gristmill.queue'::regclass"
    )
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select pg_stat_clear_snapshot()")
    before = conn.execute(stats).fetchone()
    for _ in range(20):  # the worker's heartbeat
        conn.execute(
            "update gristmill.queue j set lease_expires_at = now() + interval '30 seconds'"
            " where j.uid = gristmill.job_uid('long') and j.state = 'running'"
        )
    assert conn.execute("select gristmill.cancel('long')").fetchone() == ("cancelling",)
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select pg_stat_clear_snapshot()")
    after = conn.execute(stats).fetchone()
    assert before is not None and after is not None
    assert (after[0] - before[0], after[1] - before[1]) == (21, 21)


async def test_retention_drops_a_day_of_history_whole_while_a_worker_runs(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, _ = scripted_server()
    with Queue(database) as queue:
        queue.migrate()
        with psycopg.connect(database, autocommit=True) as conn:
            # Ten days ago: a partition of its own with a finished job in it.
            conn.execute("select gristmill.history_partition(current_date - 10)")
            conn.execute(
                "insert into gristmill.history (uid, key, language, code, entry_point, args,"
                " files, env, limits, tenant, priority, run_after, attempts, max_attempts,"
                " state, retries, cancel_requested, enqueued_at, finished_at)"
                " values (gristmill.job_uid('old'), 'old', 'fake', 'x', '', '{}', '{}', '{}',"
                " '{}', '', 0, now(), 1, 5, 'done', 0, false, now(),"
                " now() - interval '10 days')"
            )
            partitions = (
                "select count(*) from pg_inherits where inhparent = 'gristmill.history'::regclass"
            )
            before = conn.execute(partitions).fetchone()
        ids = queue.enqueue_many(NewJob("fake", "sleep:0.05", {"n": n}) for n in range(40))
        async with running_worker(database, [address], retention_s=3 * 86400, maintain_s=0.2):
            await until(lambda: queue.get("old") is None)
            jobs = [await wait(queue, job_id) for job_id in ids]
        assert {job.state for job in jobs} == {"done"}
        with psycopg.connect(database, autocommit=True) as conn:
            after = conn.execute(partitions).fetchone()
            assert before is not None and after == (before[0] - 1,)
            assert conn.execute(
                "select to_regclass('gristmill.history_' || to_char(current_date - 10, 'YYYYMMDD'))"
            ).fetchone() == (None,)
            # Today's jobs and the days ahead are kept.
            assert conn.execute(
                "select count(*) from gristmill.history where finished_at >= current_date"
            ).fetchone() == (40,)


async def test_the_worker_vacuums_the_live_queue_once_dead_rows_pile_up(
    database: str, scripted_server: ScriptedServer
) -> None:
    address, _ = scripted_server()
    with Queue(database) as queue, psycopg.connect(database, autocommit=True) as conn:
        queue.migrate()
        ids = queue.enqueue_many(NewJob("fake", "x") for _ in range(150))
        overrides = {"concurrency": 8, "vacuum_dead_tuples": 100, "vacuum_s": 0.2}

        def vacuumed() -> bool:
            conn.execute("select pg_stat_clear_snapshot()")
            row = conn.execute(
                "select vacuum_count from pg_stat_user_tables"
                " where relid = 'gristmill.queue'::regclass"
            ).fetchone()
            return row is not None and row[0] > 0

        async with running_worker(database, [address], **overrides):
            jobs = [await wait(queue, job_id) for job_id in ids]
            await until(vacuumed)  # by the worker: autovacuum counts apart
    assert {job.state for job in jobs} == {"done"}
