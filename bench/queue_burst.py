"""The queue's throughput and latency, beside `Execute` called directly, in one run.

A burst of trivial jobs (Bash `echo 1` by default) through one gristmill server:

1. **direct**: `Execute` from as many concurrent callers as the workers have slots in
   all: jobs/s, and each call's latency p50/p95; once before the queue and once after,
   since the load of a shared machine drifts;
2. **queue**: `--workers` worker processes (`gristmill worker`, `--concurrency` slots
   each) are started and listening, then the burst is enqueued in one transaction and
   drained: jobs/s from the first enqueue to the last outcome, each job's
   enqueue-to-outcome time p50/p95 (from the database's own clock: `finished_at -
   enqueued_at`, so queueing behind the burst counts), and the CPU time the worker
   processes spent per job (their start-up left out) and how many of their slots were
   busy on average;
3. **overhead**: the queue's own cost per job, without Execute: one claim
   (`FOR UPDATE SKIP LOCKED`, lease, fencing token) plus one write-back of an outcome,
   timed over `--overhead-jobs` jobs, p50/p95.

`--history N` first fills N finished jobs (what a queue keeps within its retention).

`--fairness` measures instead what one tenant's burst does to another: tenant A's
`--jobs` are enqueued at once, and once A fills every slot tenant B enqueues
`--b-jobs`; reported: B's enqueue-to-start p50/p95 (the database's clock: `started_at -
enqueued_at`), how long B's first job waited, and how many of A's jobs started in
between; once with today's claim (`fifo`: priority then age, the tenant never read;
migration 2's global ready index put back for it) and once with the fair one
(`gristmill.claim`), in the same run. Both with in-process workers (`--workers` x
`--concurrency` slots). Then the claim + write-back overhead of both claims; `--history
N` first fills the queue with N finished jobs (what a queue without retention holds).

`--scale` measures the schema: migration 3's (one table) beside today's (live queue,
payloads, partitioned history), each in a database of its own: the claim's p50/p95/p99
on an empty queue, with `--history` (or each of `--levels 1000000,10000000`, filled in
turn) finished jobs and behind 100,000 retries in backoff
at a higher priority; `--jobs` jobs enqueued (v3: `gristmill.enqueue` a row at a time;
v4: `Queue.enqueue_many`) and drained `--concurrency` at a time by each version's own
claim, heartbeat and write-back statements; heap and index sizes, dead tuples and the
HOT share of the live table after, and `queue status`'s time. No server.

`--ceiling 1,8,256` measures the queue alone: one worker with that many slots against
an Execute target that answers at once, draining `--jobs` jobs: jobs/s, enqueue-to-start
p50/p95/p99, the database connections it held and its write-back statements.

PostgreSQL runs from `scripts/postgres.sh` in a temp dir on a port of its own, unless
`--database` names one (its `gristmill` schema is then used as it is: use an empty one).

    .venv/bin/python bench/queue_burst.py                    # 1,000 jobs
    .venv/bin/python bench/queue_burst.py --jobs 10000 --json
    .venv/bin/python bench/queue_burst.py --fairness --jobs 2000 --history 1000000
    .venv/bin/python bench/queue_burst.py --scale --jobs 100000 --history 1000000
    .venv/bin/python bench/queue_burst.py --ceiling 1,8,256 --jobs 20000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import psutil
import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from gristmill.client import AsyncClient, Client  # noqa: E402
from gristmill.jobs.workspace import unmount_jobs_dir  # noqa: E402
from gristmill.queue import (  # noqa: E402
    MIGRATIONS,
    JobRecord,
    Queue,
    Worker,
    WorkerConfig,
    current_version,
    migrate,
)
from gristmill.queue.queue import NewJob  # noqa: E402
from gristmill.queue.records import JOB_COLUMNS  # noqa: E402
from gristmill.v1 import runtime_pb2 as pb  # noqa: E402

GRISTMILL = [sys.executable, "-m", "gristmill"]
# Jobs by id with index probes (`where id = any(...)` on the view would scan the history).
BY_IDS = "unnest(%s::text[]) as i(id) cross join lateral gristmill.job(i.id) as j"
CODE = {"bash": "echo 1\n", "python": "def main():\n    return 1\n"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values_s, 0.5) * 1000, 2),
        "p95_ms": round(percentile(values_s, 0.95) * 1000, 2),
        "p99_ms": round(percentile(values_s, 0.99) * 1000, 2),
    }


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway cluster from scripts/postgres.sh; yields its libpq URL."""
    base = Path(tempfile.mkdtemp(prefix="gm-bench-pg-"))
    base.chmod(0o755)
    env = {**os.environ, "GRISTMILL_PG_DIR": str(base), "GRISTMILL_PG_PORT": str(free_port())}
    script = str(REPO_ROOT / "scripts" / "postgres.sh")
    subprocess.run([script, "start"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        exports = subprocess.run(
            [script, "env"], env=env, check=True, capture_output=True, text=True
        ).stdout
        url = next(
            line.partition("=")[2].strip("'\"")
            for line in exports.split()
            if line.startswith("GRISTMILL_DATABASE_URL=")
        )
        yield url.replace("\\", "")
    finally:
        subprocess.run([script, "destroy"], env=env, check=False, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A `gristmill serve` process on a free port, with a work dir of its own."""
    work_dir = Path(tempfile.mkdtemp(prefix="gm-bench-work-"))
    work_dir.chmod(0o711)
    address = f"127.0.0.1:{free_port()}"
    argv = [*GRISTMILL, "serve", "--address", address, "--work-dir", str(work_dir)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while True:
            try:
                with Client(address) as client:
                    client.list_runtimes(timeout_s=2)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(60)
        unmount_jobs_dir(work_dir / "jobs")
        shutil.rmtree(work_dir, ignore_errors=True)


def bench_direct(address: str, language: str, jobs: int, callers: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    counter = iter(range(jobs))

    def call() -> None:
        nonlocal failures
        with Client(address) as client:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                start = time.perf_counter()
                outcome = client.execute(language, CODE[language], timeout_s=60)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    failures += outcome.verdict != pb.SUCCESS

    threads = [threading.Thread(target=call) for _ in range(callers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "jobs": jobs,
        "callers": callers,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(jobs / elapsed, 1),
        "latency": summary_ms(latencies),
        "failures": failures,
    }


def workers_cpu_s(processes: Sequence[subprocess.Popen[bytes]]) -> float:
    """The CPU time (user + system) the worker processes have used so far."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(process.pid).cpu_times()
            total += times.user + times.system
    return total


def bench_queue(
    database: str, address: str, language: str, jobs: int, workers: int, concurrency: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    # Polled by primary key: a `LIKE` over the ids scans the table (two cores at 1 M rows).
    ids = [f"burst-{tag}-{i}" for i in range(jobs)]
    argv = [*GRISTMILL, "worker", "--database", database, "--target", address]
    argv += ["--concurrency", str(concurrency), "--no-migrate"]
    processes = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            # The burst goes in once every worker is up and listening: their start-up
            # is not the queue's throughput.
            while True:
                row = conn.execute(
                    "select count(*) from pg_stat_activity where query like 'listen gristmill_%%'"
                ).fetchone()
                if row is not None and row[0] >= workers:
                    break
                time.sleep(0.1)
            cpu_at_start = workers_cpu_s(processes)
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    "select gristmill.enqueue(%s, %s, id => %s)",
                    [(language, CODE[language], job_id) for job_id in ids],
                )
            while True:
                row = conn.execute(
                    f"select count(*) from {BY_IDS}"
                    " where j.state in ('done', 'failed', 'cancelled')",
                    (ids,),
                ).fetchone()
                if row is not None and row[0] >= jobs:
                    break
                time.sleep(0.2)
            busy = conn.execute(
                "select extract(epoch from sum(finished_at - started_at))"
                "     / nullif(extract(epoch from max(finished_at) - min(started_at)), 0)"
                f" from {BY_IDS}",
                (ids,),
            ).fetchone()
            rows = conn.execute(
                "select extract(epoch from finished_at - enqueued_at),"
                " extract(epoch from enqueued_at), extract(epoch from finished_at),"
                f" verdict, retries, extract(epoch from started_at - enqueued_at) from {BY_IDS}",
                (ids,),
            ).fetchall()
        # The queue's cost on the client side, which shares the machine with the server.
        cpu_s = workers_cpu_s(processes) - cpu_at_start
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
    first = min(float(row[1]) for row in rows)
    last = max(float(row[2]) for row in rows)
    return {
        "jobs": jobs,
        "workers": workers,
        "concurrency_per_worker": concurrency,
        "seconds": round(last - first, 2),
        "jobs_per_s": round(jobs / (last - first), 1),
        "enqueue_to_outcome": summary_ms([float(row[0]) for row in rows]),
        "enqueue_to_start": summary_ms([float(row[5]) for row in rows]),
        "failures": sum(row[3] != "SUCCESS" for row in rows),
        "retries": sum(int(row[4]) for row in rows),
        "worker_cpu_ms_per_job": round(cpu_s * 1000 / jobs, 2),
        # Jobs in flight on average between the first claim and the last outcome: the
        # slots the workers kept busy (out of workers x concurrency).
        "busy_slots": round(float(busy[0] or 0), 2) if busy else 0.0,
    }


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


def fill_history(database: str, jobs: int) -> float:
    """Adds `jobs` finished jobs (as many as a queue without retention keeps), into the
    jobs table of versions 1-3 or today's history partition; seconds."""
    start = time.perf_counter()
    with psycopg.connect(database, autocommit=True) as conn:
        current = current_version(conn)
        table = "gristmill.jobs" if current < 4 else "gristmill.history"
        key = "gen_random_uuid()::text" if current < 4 else "gristmill.uuidv7()"
        column = "id" if current < 4 else "uid"
        rest = "" if current < 4 else ", '', '{}', '{}', '{}', '{}', 0, now(), 5, 0, false, now()"
        rest_columns = (
            ""
            if current < 4
            else ", entry_point, args, files, env, limits, priority, run_after, max_attempts,"
            " retries, cancel_requested, enqueued_at"
        )
        for first in range(0, jobs, 100_000):
            conn.execute(
                f"insert into {table} ({column}, language, code, tenant, state, attempts,"
                f" verdict, result, started_at, finished_at{rest_columns})"
                f" select {key}, 'bash', 'echo 1', 'history-' || (n %% 10), 'done', 1,"
                f" 'SUCCESS', '1', now(), now(){rest}"
                " from generate_series(%s::int, %s::int) as n".encode(),
                (first, min(jobs, first + 100_000) - 1),
            )
        for vacuumed in (
            [table] if current < 4 else [table, "gristmill.queue", "gristmill.payloads"]
        ):
            conn.execute(f"vacuum analyze {vacuumed}".encode())
    return time.perf_counter() - start


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


async def _overhead(database: str, jobs: int, claim: str = "fair") -> dict[str, Any]:
    """Claim + write-back per job, by the worker's own statements, without Execute."""
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(database) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "select gristmill.enqueue('bash', 'echo 1', id => %s, priority => 1000)",
            [(f"overhead-{tag}-{i}",) for i in range(jobs)],
        )
    config = WorkerConfig(conninfo=database, targets=("127.0.0.1:1",), migrate=False)
    worker = WORKERS[claim](config)
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
V3_WRITE = (
    "update gristmill.jobs set state = 'done', verdict = 'SUCCESS', result = '1',"
    " stdout = '1', stderr = '', exit_code = 0, usage = '{}', detail = '',"
    " finished_at = now(), lease_expires_at = null"
    " where id = %s and lease_token = %s and state = 'running'"
)
V3_HEARTBEAT = (
    "update gristmill.jobs j set lease_expires_at = now() + interval '30 seconds'"
    " from unnest(%s::text[], %s::bigint[]) as h(id, token)"
    " where j.id = h.id and j.lease_token = h.token and j.state = 'running'"
)
V4_WRITE = (
    "select gristmill.finish(%s::uuid[], %s::bigint[], %s::text[], %s::text[], %s::text[],"
    " null, %s::text[], null, null, null, null, null, null)"
)
V4_HEARTBEAT = (
    "update gristmill.queue j set lease_expires_at = now() + interval '30 seconds'"
    " from unnest(%s::uuid[], %s::bigint[]) as h(uid, token)"
    " where j.uid = h.uid and j.lease_token = h.token and j.state = 'running'"
)


def _sizes(conn: psycopg.Connection[Any], version: int) -> dict[str, Any]:
    """Heap and index bytes of the queue's tables, dead tuples and HOT share of the live one."""
    tables = (
        ["gristmill.jobs"]
        if version < 4
        else ["gristmill.queue", "gristmill.payloads", "gristmill.history"]
    )
    sizes: dict[str, Any] = {}
    for table in tables:
        row = conn.execute(
            "select coalesce(sum(pg_table_size(c.oid)), 0)::bigint,"
            " coalesce(sum(pg_indexes_size(c.oid)), 0)::bigint"
            " from pg_class c where c.oid = %s::regclass or c.oid in"
            " (select inhrelid from pg_inherits where inhparent = %s::regclass)",
            (table, table),
        ).fetchone()
        assert row is not None
        sizes[table] = {"heap_mb": round(row[0] / 2**20, 1), "indexes_mb": round(row[1] / 2**20, 1)}
    live = tables[0]
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select n_dead_tup, n_tup_upd, n_tup_hot_upd from pg_stat_user_tables"
        " where relid = %s::regclass",
        (live,),
    ).fetchone()
    assert row is not None
    sizes["dead_tuples"] = int(row[0])
    sizes["updates"] = int(row[1])
    sizes["hot_share"] = round(row[2] / row[1], 3) if row[1] else None
    return sizes


def _scale_run(database: str, version: int, jobs: int, slots: int) -> dict[str, Any]:
    """`jobs` trivial jobs enqueued then claimed `slots` at a time and written back by
    the worker's statements at `version`: claim and write-back p50/p99, sizes after."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("select pg_stat_reset()")
        start = time.perf_counter()
        if version < 4:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    "select gristmill.enqueue('bash', 'echo 1', jsonb_build_object('n', %s::int))",
                    [(n,) for n in range(jobs)],
                )
        else:
            with Queue(database) as queue:
                queue.enqueue_many(NewJob("bash", "echo 1", {"n": n}) for n in range(jobs))
        enqueue_s = time.perf_counter() - start
        claims: list[float] = []
        writes: list[float] = []
        stalls: list[tuple[str, float]] = []  # claims past 100 ms: when, how long
        key = "id" if version < 4 else "uid"
        while True:
            start = time.perf_counter()
            rows = conn.execute(
                f"select {key}, lease_token from gristmill.claim('bench', %s, 30)".encode(),
                (slots,),
            ).fetchall()
            claims.append(time.perf_counter() - start)
            if claims[-1] > 0.1:
                stalls.append((time.strftime("%H:%M:%S"), round(claims[-1] * 1000)))
            if not rows:
                break
            keys = [row[0] for row in rows]
            tokens = [row[1] for row in rows]
            conn.execute(V3_HEARTBEAT if version < 4 else V4_HEARTBEAT, (keys, tokens))
            start = time.perf_counter()
            if version < 4:
                for job_key, token in zip(keys, tokens, strict=True):
                    conn.execute(V3_WRITE, (job_key, token))
            else:
                n = len(rows)
                conn.execute(
                    V4_WRITE, (keys, tokens, ["done"] * n, ["SUCCESS"] * n, ["1"] * n, ["1"] * n)
                )
            writes.append((time.perf_counter() - start) / len(rows))
        claims.pop()  # the empty one
        drain_s = sum(claims) + sum(writes) * slots
        return {
            "jobs": jobs,
            "enqueue_jobs_per_s": round(jobs / enqueue_s),
            "claim": summary_ms(claims),
            "claim_stalls": stalls,
            "write_back_per_job": summary_ms(writes),
            "claim_plus_write_jobs_per_s": round(jobs / drain_s) if drain_s else None,
            **_sizes(conn, version),
        }


def _probe_claims(database: str, claims: int) -> dict[str, float]:
    """The claim of one job p50/p99 (each written back after, as the worker does)."""
    timings: list[float] = []
    with psycopg.connect(database, autocommit=True) as conn:
        version = current_version(conn)
        for _ in range(claims):
            start = time.perf_counter()
            row = conn.execute(
                ("select id, lease_token" if version < 4 else "select uid, lease_token")
                + " from gristmill.claim('probe', 1, 30)"
            ).fetchone()
            timings.append(time.perf_counter() - start)
            if row is None:
                break
            if version < 4:
                conn.execute(V3_WRITE, row)
            else:
                conn.execute(V4_WRITE, ([row[0]], [row[1]], ["done"], ["SUCCESS"], ["1"], ["1"]))
    return summary_ms(timings)


def history_levels(options: argparse.Namespace) -> list[int]:
    """The finished jobs at which `--scale` probes the claim, in rising order."""
    text = options.levels or (str(options.history) if options.history else "")
    return sorted(int(level) for level in text.split(",") if level)


def scale(options: argparse.Namespace, cluster: str) -> dict[str, Any]:
    """Migration 3's schema beside today's, each in a new database of one cluster: the
    claim with 0 and with each of `--levels` (or `--history`) finished jobs, behind
    100,000 scheduled retries, and through `--jobs` jobs (sizes, dead tuples, HOT share
    after)."""
    results: dict[str, Any] = {}
    for version in (3, MIGRATIONS[-1].version):
        name = f"bench_scale_v{version}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(cluster, autocommit=True) as conn:
            conn.execute(f'create database "{name}"'.encode())
        database = psycopg.conninfo.make_conninfo(cluster, dbname=name)
        migrate(database, target=version)
        run: dict[str, Any] = {}
        with psycopg.connect(database, autocommit=True) as conn:
            log(f"v{version}: claims on an empty queue")
            conn.execute(
                "select gristmill.enqueue('bash', 'echo 1') from generate_series(1, %s)",
                (options.probe_claims,),
            )
        run["claim_empty"] = _probe_claims(database, options.probe_claims)
        log(f"v{version}: {options.jobs} jobs, claimed {options.concurrency} at a time")
        run["drain"] = _scale_run(database, version, options.jobs, options.concurrency)
        filled = 0
        for level in history_levels(options):
            log(f"v{version}: {level} finished jobs")
            step: dict[str, Any] = {"finished": level}
            step["fill_s"] = round(fill_history(database, level - filled), 1)
            filled = level
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute(
                    "select gristmill.enqueue('bash', 'echo 1') from generate_series(1, %s)",
                    (options.probe_claims,),
                )
            step["claim"] = _probe_claims(database, options.probe_claims)
            with psycopg.connect(database, autocommit=True) as conn:
                step["sizes"] = _sizes(conn, version)
                with Queue(database) as queue:
                    start = time.perf_counter()
                    if version < 4:  # what `queue status` did then
                        conn.execute("select state, count(*) from gristmill.jobs group by state")
                    else:
                        queue.counts()
                    step["status_ms"] = round((time.perf_counter() - start) * 1000, 2)
            run.setdefault("history", []).append(step)
        with psycopg.connect(database, autocommit=True) as conn:
            log(f"v{version}: 100,000 retries in backoff at a higher priority")
            conn.execute(
                "select gristmill.enqueue('bash', 'echo 1', priority => 10,"
                " run_after => now() + interval '1 hour') from generate_series(1, 100000)"
            )
            conn.execute(
                "select gristmill.enqueue('bash', 'echo 1') from generate_series(1, %s)",
                (options.probe_claims,),
            )
            conn.execute("analyze")
        run["claim_behind_scheduled"] = _probe_claims(database, options.probe_claims)
        results[f"v{version}"] = run
    return results


class _InstantClient:
    """An Execute target that answers at once: what the queue alone can do (`--ceiling`)."""

    async def execute(self, **arguments: Any) -> pb.Outcome:
        return pb.Outcome(job_id=arguments["job_id"], verdict=pb.SUCCESS, result_json="1")

    async def cancel(self, job_id: str, timeout_s: float = 10) -> bool:
        return False

    async def close(self) -> None:
        pass


async def _ceiling(database: str, jobs: int, slots: int) -> dict[str, Any]:
    """One worker with `slots` slots against an instant target: jobs/s through claim and
    outcome, enqueue-to-start p50/p95/p99, and the database connections it held."""
    with Queue(database) as queue:
        ids = queue.enqueue_many(NewJob("bash", "echo 1") for _ in range(jobs))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("select pg_stat_reset()")
    worker = Worker(
        WorkerConfig(conninfo=database, targets=("127.0.0.1:1",), concurrency=slots, migrate=False),
        client=cast(AsyncClient, _InstantClient()),
    )
    task = asyncio.create_task(worker.run())
    connections = 0
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        own = (await (await conn.execute("select pg_backend_pid()")).fetchone() or [0])[0]
        while True:
            cursor = await conn.execute(
                "select (select count(*) from gristmill.queue),"
                " (select count(*) from pg_stat_activity"
                "   where datname = current_database() and pid <> %s)",
                (own,),
            )
            row = await cursor.fetchone()
            assert row is not None
            connections = max(connections, int(row[1]))
            if row[0] == 0:
                break
            await asyncio.sleep(0.2)
    with psycopg.connect(database, autocommit=True) as sync:
        at_end = _sizes(sync, 4)
        # The worker's own vacuum (every few seconds past a threshold) meanwhile.
        await asyncio.sleep(3 * worker.config.vacuum_s)
        later = _sizes(sync, 4)
    worker.stop()
    await task
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "select extract(epoch from started_at - enqueued_at), extract(epoch from started_at),"
            f" extract(epoch from finished_at) from {BY_IDS}",
            (ids,),
        ).fetchall()
    seconds = max(float(r[2]) for r in rows) - min(float(r[1]) for r in rows)
    return {
        "slots": slots,
        "jobs": jobs,
        "jobs_per_s": round(jobs / seconds),
        "enqueue_to_start": summary_ms([float(r[0]) for r in rows]),
        "database_connections": connections,
        "write_backs": worker.stats.write_backs,
        "at_end": at_end,
        "dead_tuples_later": later["dead_tuples"],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="burst size (1000)")
    parser.add_argument("--language", choices=sorted(CODE), default="bash")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker (4)")
    parser.add_argument("--overhead-jobs", type=int, default=500)
    parser.add_argument("--database", help="libpq URL of an empty database (default: a new one)")
    parser.add_argument(
        "--fairness", action="store_true", help="two tenants: B's wait behind A's burst"
    )
    parser.add_argument("--b-jobs", type=int, default=10, help="tenant B's jobs (10)")
    parser.add_argument("--history", type=int, default=0, help="finished jobs to pre-fill (0)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="migration 3's schema beside today's: claims, sizes, dead tuples, HOT share",
    )
    parser.add_argument(
        "--levels",
        default="",
        metavar="N,...",
        help="--scale: finished jobs to probe the claim at, filled in turn (--history)",
    )
    parser.add_argument("--probe-claims", type=int, default=2000, help="claims timed (2000)")
    parser.add_argument(
        "--ceiling",
        default="",
        metavar="SLOTS,...",
        help="the queue alone: one worker, an instant target, e.g. 1,8,256",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser.parse_args(argv)


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
            run["overhead"] = asyncio.run(_overhead(database, options.overhead_jobs, claim))
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


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    with contextlib.ExitStack() as stack:
        database = options.database or stack.enter_context(postgres())
        if options.scale:
            runs = scale(options, database)
            print(json.dumps({"cpus": os.cpu_count(), "load_average": os.getloadavg(), **runs}))
            return 0
        migrate(database)
        if options.ceiling:
            ceilings = [
                asyncio.run(_ceiling(database, options.jobs, int(slots)))
                for slots in options.ceiling.split(",")
            ]
            print(
                json.dumps(
                    {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "ceiling": ceilings}
                )
            )
            return 0
        address = stack.enter_context(server())
        if options.fairness:
            runs = fairness(options, database, address)
            stack.close()
            if options.json:
                print(json.dumps({"cpus": os.cpu_count(), "load_average": os.getloadavg(), **runs}))
            else:
                print_fairness(runs)
            return 0
        history_s = fill_history(database, options.history) if options.history else 0.0
        log("warm-up")
        bench_direct(address, options.language, 20, 2)
        callers = options.workers * options.concurrency
        log(f"direct: {options.jobs} Execute calls from {callers} callers")
        direct = bench_direct(address, options.language, options.jobs, callers)
        log(f"queue: a burst of {options.jobs} jobs, {options.workers} workers")
        queued = bench_queue(
            database,
            address,
            options.language,
            options.jobs,
            options.workers,
            options.concurrency,
        )
        # Direct calls again after the queue: on a shared machine the load drifts, and
        # the two direct runs around the queue's show by how much.
        log(f"direct again: {options.jobs} Execute calls from {callers} callers")
        direct_after = bench_direct(address, options.language, options.jobs, callers)
        log(f"overhead: claim + write-back of {options.overhead_jobs} jobs")
        overhead = asyncio.run(_overhead(database, options.overhead_jobs))
    result = {
        "language": options.language,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "direct": direct,
        "queue": queued,
        "direct_after": direct_after,
        "overhead": overhead,
        "history": options.history,
        "history_fill_s": round(history_s, 1),
    }
    if options.json:
        print(json.dumps(result))
        return 0
    print(f"{options.jobs} trivial {options.language} jobs, one server, {os.cpu_count()} CPUs")
    print(
        f"  direct Execute, {direct['callers']} callers: {direct['jobs_per_s']} jobs/s, "
        f"latency p50 {direct['latency']['p50_ms']} ms p95 {direct['latency']['p95_ms']} ms"
    )
    print(
        f"  direct Execute again, after the queue: {direct_after['jobs_per_s']} jobs/s, "
        f"latency p50 {direct_after['latency']['p50_ms']} ms "
        f"p95 {direct_after['latency']['p95_ms']} ms"
    )
    print(
        f"  queue, {queued['workers']}x{queued['concurrency_per_worker']} slots "
        f"({queued['busy_slots']} busy on average): "
        f"{queued['jobs_per_s']} jobs/s, enqueue-to-outcome "
        f"p50 {queued['enqueue_to_outcome']['p50_ms']} ms "
        f"p95 {queued['enqueue_to_outcome']['p95_ms']} ms, enqueue-to-start "
        f"p50 {queued['enqueue_to_start']['p50_ms']} ms p95 {queued['enqueue_to_start']['p95_ms']}"
        f" ms p99 {queued['enqueue_to_start']['p99_ms']} ms, retries {queued['retries']}, "
        f"worker CPU {queued['worker_cpu_ms_per_job']} ms/job"
    )
    print(
        f"  queue overhead per job (claim + write-back): "
        f"p50 {overhead['claim_plus_write_back']['p50_ms']} ms "
        f"p95 {overhead['claim_plus_write_back']['p95_ms']} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
