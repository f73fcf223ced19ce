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
p50/p95/p99, the database connections it held and its write-back statements; each
without prefetch and with the default one, in the same run.

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
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from bench.queue_common import (  # noqa: E402
    BY_IDS,
    CODE,
    GRISTMILL,
    fill_history,
    log,
    postgres,
    server,
    summary_ms,
)
from bench.queue_fairness import claim_overhead, fairness, print_fairness  # noqa: E402
from bench.queue_scale import queue_ceiling, scale  # noqa: E402
from gristmill.client import Client  # noqa: E402
from gristmill.queue import (  # noqa: E402
    migrate,
)
from gristmill.v1 import runtime_pb2 as pb  # noqa: E402


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
                asyncio.run(queue_ceiling(database, options.jobs, int(slots), prefetch))
                for slots in options.ceiling.split(",")
                for prefetch in (0, None)  # without, then with the default prefetch
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
        overhead = asyncio.run(claim_overhead(database, options.overhead_jobs))
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
