"""`--fairness`: tenant B's wait behind tenant A's burst, the claim before migration 3
beside the fair one, and the claim + write-back overhead of both."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from bench.queue_common import (
    BY_IDS,
    CODE,
    fill_history,
    log,
    summary_ms,
)
from gristmill.credentials import Credentials
from gristmill.queue import (
    JobRecord,
    Worker,
    WorkerConfig,
)
from gristmill.queue.records import JOB_COLUMNS
from gristmill.v1 import runtime_pb2 as pb

# The claim before migration 3, for the comparison: the tenant is never read.
FIFO_CLAIM = """
    with next as (
        select uid from gristmill.queue
         where state = 'queued'
         order by priority desc, run_after, enqueued_at
         limit %(limit)s
         for update skip locked
    ), taken as (
        update gristmill.queue j
           set state = 'running', attempts = j.attempts + 1,
               lease_token = nextval('gristmill.lease_tokens'), leased_by = %(worker)s,
               lease_expires_at = now() + make_interval(secs => %(lease)s),
               started_at = coalesce(j.started_at, now())
          from next
         where j.uid = next.uid
        returning j.uid, j.attempts, j.lease_token, j.started_at
    )
    select {columns} from gristmill.live l join taken t on t.uid = l.uid
""".format(
    columns=", ".join(
        f"t.{name}"
        if name in ("attempts", "lease_token", "started_at")
        else ("'running'" if name == "state" else f"l.{name}")
        for name in (column.strip() for column in JOB_COLUMNS.split(","))
    )
)

# The index that claim walks (migration 3 replaced it by one per tenant).
FIFO_INDEX = (
    "create index if not exists queue_fifo on gristmill.queue"
    " (priority desc, run_after, enqueued_at) where state = 'queued'"
)


class FifoWorker(Worker):
    """A worker claiming as the queue did before fair claims (priority, then age)."""

    async def _claim(self, limit: int) -> list[JobRecord]:
        rows = await self._db.fetch(
            FIFO_CLAIM,
            {"limit": limit, "worker": self.config.worker_id, "lease": self.config.lease_s},
        )
        jobs = [JobRecord.from_row(row) for row in rows]
        self.stats.claimed += len(jobs)
        return jobs


WORKERS = {"fifo": FifoWorker, "fair": Worker}


@contextlib.contextmanager
def claim_index(database: str, claim: str) -> Iterator[None]:
    """The index the claim walks: today's back in place for `fifo`, dropped after."""
    if claim != "fifo":
        yield
        return
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(FIFO_INDEX)
        try:
            yield
        finally:
            conn.execute("drop index gristmill.queue_fifo")


async def _fairness(
    database: str,
    address: str,
    language: str,
    claim: str,
    a_jobs: int,
    b_jobs: int,
    workers: int,
    concurrency: int,
) -> dict[str, Any]:
    """Tenant A's burst, then tenant B's few jobs once A holds every slot: B's wait."""
    tag = uuid.uuid4().hex[:8]
    tenant_a, tenant_b = f"A-{tag}", f"B-{tag}"
    slots = workers * concurrency
    pool = [
        WORKERS[claim](
            WorkerConfig(
                conninfo=database,
                targets=(address,),
                concurrency=concurrency,
                migrate=False,
                worker_id=f"bench-{claim}-{i}",
            )
        )
        for i in range(workers)
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in pool]
    b_ids = [f"fair-{tag}-B-{i}" for i in range(b_jobs)]
    insert = (
        "insert into gristmill.jobs (id, language, code, tenant)"
        " select %s || n, %s, %s, %s from generate_series(0, %s::int) as n"
    )
    conn = await psycopg.AsyncConnection.connect(database, autocommit=True)
    try:
        await conn.execute(
            insert, (f"fair-{tag}-A-", language, CODE[language], tenant_a, a_jobs - 1)
        )
        while True:  # A holds every slot, and has kept doing so for a while
            cursor = await conn.execute(
                f"select count(*) from {BY_IDS} where j.state <> 'queued'",
                ([f"fair-{tag}-A-{n}" for n in range(2 * slots)],),
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= 2 * slots:
                break
            await asyncio.sleep(0.05)
        await conn.execute(
            insert, (f"fair-{tag}-B-", language, CODE[language], tenant_b, b_jobs - 1)
        )
        while True:  # by primary key: no scan of the table
            cursor = await conn.execute(
                f"select count(*) from {BY_IDS} where j.started_at is not null",
                (b_ids,),
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= b_jobs:
                break
            await asyncio.sleep(0.1)
        cursor = await conn.execute(
            "select extract(epoch from started_at - enqueued_at), enqueued_at, started_at"
            f" from {BY_IDS}",
            (b_ids,),
        )
        b_rows = await cursor.fetchall()
        enqueued = min(row[1] for row in b_rows)
        first_start = min(row[2] for row in b_rows)
        cursor = await conn.execute(
            "select count(*) from gristmill.jobs where tenant = %s"
            " and started_at >= %s and started_at < %s",
            (tenant_a, enqueued, first_start),
        )
        between = await cursor.fetchone()
        cursor = await conn.execute(  # one job's run time, what B's first wait compares to
            "select extract(epoch from finished_at - started_at) from gristmill.jobs"
            " where tenant = %s and state = 'done'",
            (tenant_a,),
        )
        runs = [float(row[0]) for row in await cursor.fetchall()]
        cursor = await conn.execute(
            "select count(*) from gristmill.live where tenant = %s and state = 'queued'",
            (tenant_a,),
        )
        left = await cursor.fetchone()
        # What is left of A's burst is not measured: cancelled, not run.
        await conn.execute(
            "select gristmill.cancel(id) from gristmill.live"
            " where tenant = %s and state = 'queued'",
            (tenant_a,),
        )
    finally:
        await conn.close()
        for worker in pool:
            worker.stop()
        await asyncio.gather(*tasks)
    waits = [float(row[0]) for row in b_rows]
    return {
        "claim": claim,
        "a_jobs": a_jobs,
        "b_jobs": b_jobs,
        "slots": slots,
        "b_enqueue_to_start": summary_ms(waits),
        "b_first_start_ms": round(min(waits) * 1000, 2),
        "a_run": summary_ms(runs),
        "a_started_before_b": int(between[0]) if between else 0,
        "a_queued_after_b_started": int(left[0]) if left else 0,
    }


async def claim_overhead(database: str, jobs: int, claim: str = "fair") -> dict[str, Any]:
    """Claim + write-back per job, by the worker's own statements, without Execute."""
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(database) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "select gristmill.enqueue('bash', 'echo 1', id => %s, priority => 1000)",
            [(f"overhead-{tag}-{i}",) for i in range(jobs)],
        )
    config = WorkerConfig(conninfo=database, targets=("127.0.0.1:1",), migrate=False)
    worker = WORKERS[claim](config)
    # A server not reached yet: the claim takes any language (nothing is called).
    worker._routes.connect(config.targets, Credentials.from_env(), None)
    outcome = pb.Outcome(verdict=pb.SUCCESS, result_json="1")
    writer = asyncio.create_task(worker._writer.run())
    claims: list[float] = []
    writes: list[float] = []
    for _ in range(jobs):
        start = time.perf_counter()
        claimed: list[JobRecord] = await worker._claim(1)
        claims.append(time.perf_counter() - start)
        start = time.perf_counter()
        await worker._record(claimed[0], outcome)
        writes.append(time.perf_counter() - start)
    writer.cancel()
    await worker._db.close()
    await worker._writer.db.close()
    total = [c + w for c, w in zip(claims, writes, strict=True)]
    return {
        "jobs": jobs,
        "claim": summary_ms(claims),
        "write_back": summary_ms(writes),
        "claim_plus_write_back": summary_ms(total),
        "mean_ms": round(statistics.fmean(total) * 1000, 2),
    }


# The worker's statements at each schema, for the claim + write-back loop of `--scale`:
# version 3 wrote each outcome by an UPDATE of its row; version 4 moves a batch to the
# history in one statement. One heartbeat per claim (what a job longer than a third of
# its lease costs) shows what the heartbeats cost.
def fairness(options: argparse.Namespace, database: str, address: str) -> dict[str, Any]:
    """B's wait behind A's burst and the claim's own cost, today's claim beside the fair."""
    history_s = fill_history(database, options.history) if options.history else 0.0
    runs: dict[str, Any] = {"history": options.history, "history_fill_s": round(history_s, 1)}
    for claim in WORKERS:
        with claim_index(database, claim):
            log(f"fairness, {claim} claim: {options.jobs} jobs of A, then {options.b_jobs} of B")
            run = asyncio.run(
                _fairness(
                    database,
                    address,
                    options.language,
                    claim,
                    options.jobs,
                    options.b_jobs,
                    options.workers,
                    options.concurrency,
                )
            )
            log(f"overhead, {claim} claim: claim + write-back of {options.overhead_jobs} jobs")
            run["overhead"] = asyncio.run(claim_overhead(database, options.overhead_jobs, claim))
        runs[claim] = run
    return runs


def print_fairness(runs: dict[str, Any]) -> None:
    print(f"tenant B behind tenant A's burst, {runs['history']} finished jobs in the table")
    for claim in WORKERS:
        run = runs[claim]
        wait, cost = run["b_enqueue_to_start"], run["overhead"]["claim"]
        print(
            f"  {claim}: {run['a_jobs']} of A then {run['b_jobs']} of B on {run['slots']} slots:"
            f" B's enqueue-to-start p50 {wait['p50_ms']} ms p95 {wait['p95_ms']} ms,"
            f" first {run['b_first_start_ms']} ms (a job runs {run['a_run']['p50_ms']} ms),"
            f" {run['a_started_before_b']} of A's started"
            f" before B's first; claim p50 {cost['p50_ms']} ms p95 {cost['p95_ms']} ms"
        )
