"""Fair claims between tenants, against a real PostgreSQL: round robin over the tenants
with ready jobs, priority within a tenant, weights and running caps from
`gristmill.tenants`, and one tenant's backlog never holding another's jobs back.

Claims are made with `gristmill.claim` itself (the worker's one statement) and the order
they come in is asserted, never a time.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from gristmill.queue import Queue, migrate
from tests.queue.conftest import ScriptedServer, finish_jobs
from tests.queue.test_worker import running_worker, wait


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    migrate(database)
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


Conn = psycopg.Connection[tuple[object, ...]]


def enqueue(conn: Conn, tenant: str, count: int = 1, priority: int = 0) -> None:
    """`count` jobs of `tenant` in one statement (the bulk path a producer would use)."""
    conn.execute(
        "insert into gristmill.jobs (language, code, tenant, priority, args)"
        " select 'fake', 'echo', %s, %s, jsonb_build_object('n', n)"
        " from generate_series(1, %s) as n",
        (tenant, priority, count),
    )


def claim(conn: Conn, slots: int = 1) -> list[tuple[str, str, int]]:
    """Claims up to `slots` jobs: (id, tenant, priority) each, in the order claimed."""
    rows = conn.execute(
        "select id, tenant, priority from gristmill.claim('test-worker', %s, 30)", (slots,)
    ).fetchall()
    return [(str(i), str(t), int(p)) for i, t, p in rows]  # type: ignore[call-overload]


def finish(conn: Conn, claimed: list[tuple[str, str, int]]) -> None:
    finish_jobs(conn, "id = any(%s)", ([job_id for job_id, _, _ in claimed],))


def one_slot(conn: Conn, claims: int) -> list[str]:
    """The tenants served by one slot, each job finished before the next claim."""
    served = []
    for _ in range(claims):
        claimed = claim(conn)
        finish(conn, claimed)
        served += [tenant for _, tenant, _ in claimed]
    return served


def test_a_tenant_behind_anothers_backlog_is_served_in_turn(conn: Conn) -> None:
    enqueue(conn, "A", 200)
    enqueue(conn, "B", 5)
    served = one_slot(conn, 30)
    assert served[:10] == ["A", "B"] * 5
    assert served[10:] == ["A"] * 20


def test_three_tenants_take_turns(conn: Conn) -> None:
    enqueue(conn, "A", 100)
    enqueue(conn, "B", 100)
    enqueue(conn, "C", 3)
    served = one_slot(conn, 15)
    assert served[:9] == ["A", "B", "C"] * 3
    assert served[9:] == ["A", "B"] * 3


def test_the_next_slot_that_frees_goes_to_the_tenant_with_fewest_running(conn: Conn) -> None:
    enqueue(conn, "A", 100)
    held = claim(conn, 4)
    assert [tenant for _, tenant, _ in held] == ["A"] * 4
    enqueue(conn, "B", 3)
    finish(conn, held[:1])  # A: 3 running, B: 0
    assert [tenant for _, tenant, _ in claim(conn)] == ["B"]
    finish(conn, held[1:2])  # A: 2 running, B: 1
    assert [tenant for _, tenant, _ in claim(conn)] == ["B"]
    finish(conn, held[2:3])  # A: 1, B: 2
    assert [tenant for _, tenant, _ in claim(conn)] == ["A"]


def test_priority_orders_jobs_within_a_tenant(conn: Conn) -> None:
    for priority in (0, 5, 1):
        enqueue(conn, "A", priority=priority)
    enqueue(conn, "B", priority=0)
    served = []
    for _ in range(4):
        claimed = claim(conn)
        finish(conn, claimed)
        served += [(tenant, priority) for _, tenant, priority in claimed]
    assert served == [("A", 5), ("B", 0), ("A", 1), ("A", 0)]


def test_a_tenant_alone_gets_every_slot(conn: Conn) -> None:
    enqueue(conn, "A", 10)
    # B's job is not due yet: it takes no slot and does not hold A back.
    conn.execute(
        "insert into gristmill.jobs (language, code, tenant, run_after)"
        " values ('fake', 'echo', 'B', now() + interval '1 hour')"
    )
    first = claim(conn, 4)
    second = claim(conn, 4)  # the first four still running
    assert [tenant for _, tenant, _ in first + second] == ["A"] * 8


def test_a_tenants_running_cap_holds_it_and_leaves_the_slots_to_others(conn: Conn) -> None:
    conn.execute("insert into gristmill.tenants (tenant, max_running) values ('A', 2)")
    enqueue(conn, "A", 10)
    enqueue(conn, "B", 10)
    claimed = claim(conn, 6)
    assert Counter(tenant for _, tenant, _ in claimed) == {"A": 2, "B": 4}
    # A alone now (B's are over), 2 running and 8 queued: still no more than 2 at once.
    finish_jobs(conn, "tenant = 'B'")
    conn.execute("select gristmill.cancel(id) from gristmill.live where tenant = 'B'")
    assert claim(conn, 5) == []
    finish(conn, [job for job in claimed if job[1] == "A"][:1])
    assert [tenant for _, tenant, _ in claim(conn, 5)] == ["A"]


def test_a_cap_holds_across_claims_made_at_once(database: str, conn: Conn) -> None:
    conn.execute("insert into gristmill.tenants (tenant, max_running) values ('A', 2)")
    enqueue(conn, "A", 10)
    with psycopg.connect(database) as first:  # a claim still in its transaction
        assert Counter(tenant for _, tenant, _ in claim(first, 2)) == {"A": 2}
        enqueue(conn, "B", 10)
        second = claim(conn, 5)  # made meanwhile: it must not count A at 0 running
        first.commit()
    assert Counter(tenant for _, tenant, _ in second) == {"B": 5}
    row = conn.execute(
        "select count(*) from gristmill.jobs where tenant = 'A' and state = 'running'"
    ).fetchone()
    assert row == (2,)


def test_weights_share_the_slots_in_proportion(conn: Conn) -> None:
    conn.execute("insert into gristmill.tenants (tenant, weight) values ('A', 3)")
    enqueue(conn, "A", 20)
    enqueue(conn, "B", 20)
    assert Counter(tenant for _, tenant, _ in claim(conn, 8)) == {"A": 6, "B": 2}


def test_concurrent_claims_take_each_job_once(database: str, conn: Conn) -> None:
    for tenant in "ABC":
        enqueue(conn, tenant, 60)
    taken: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def drain() -> None:
        try:
            with psycopg.connect(database, autocommit=True) as own:
                while claimed := claim(own, 3):
                    finish(own, claimed)
                    with lock:
                        taken.extend(job_id for job_id, _, _ in claimed)
        except BaseException as error:  # a deadlock would land here
            errors.append(error)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(taken) == len(set(taken)) == 180


@pytest.mark.attack("tenants through the queue")
async def test_one_tenants_10000_queued_jobs_do_not_keep_anothers_from_starting(
    database: str, conn: Conn, scripted_server: ScriptedServer
) -> None:
    """The attack: a tenant floods the queue; another's job is among the next claims.

    Its position is counted by fencing tokens (one per claim, in claim order): the A
    jobs claimed after the last token given out before B's enqueue and before B's own.
    """
    address, _ = scripted_server()
    concurrency = 2
    enqueue(conn, "A", 10_000)
    with Queue(database) as queue:
        async with running_worker(database, [address], concurrency=concurrency):

            def a_started() -> int:
                row = conn.execute(
                    "select count(*) from gristmill.jobs where tenant = 'A'"
                    " and state in ('running', 'done')"
                ).fetchone()
                return int(row[0]) if row else 0  # type: ignore[call-overload]

            while await asyncio.to_thread(a_started) < 20:
                await asyncio.sleep(0.05)
            row = conn.execute("select max(lease_token) from gristmill.jobs").fetchone()
            assert row is not None
            before = row[0]
            b_id = queue.enqueue("fake", "echo", {"n": "B"}, tenant="B")
            b_job = await wait(queue, b_id)
    assert b_job.verdict == "SUCCESS"
    row = conn.execute(
        "select count(*) from gristmill.jobs where tenant = 'A'"
        " and lease_token > %s and lease_token < %s",
        (before, b_job.lease_token),
    ).fetchone()
    assert row is not None
    # At most the claims already under way when B arrived: one per slot.
    assert int(row[0]) <= concurrency  # type: ignore[call-overload]
