"""`--scale` (migration 3's schema beside today's: claims at each count of finished
jobs, sizes, dead tuples, HOT share) and `--ceiling` (the queue alone)."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any, cast

import psycopg

from bench.queue_common import (
    BY_IDS,
    fill_history,
    log,
    summary_ms,
    table_sizes,
)
from gristmill.client import AsyncClient
from gristmill.queue import (
    MIGRATIONS,
    Queue,
    Worker,
    WorkerConfig,
    current_version,
    migrate,
)
from gristmill.queue.queue import NewJob
from gristmill.v1 import runtime_pb2 as pb

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
            **table_sizes(conn, version),
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
                step["sizes"] = table_sizes(conn, version)
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

    async def list_runtimes(self, timeout_s: float = 5) -> pb.ListRuntimesResponse:
        """It runs Bash (the bench's jobs), with room for anything."""
        return pb.ListRuntimesResponse(
            runtimes=[pb.RuntimeInfo(language="bash", available=True)],
            caller=pb.CallerInfo(max_concurrent_jobs=100_000),
        )

    async def close(self) -> None:
        pass


async def queue_ceiling(
    database: str, jobs: int, slots: int, prefetch: int | None = None
) -> dict[str, Any]:
    """One worker with `slots` slots (and `prefetch`: None, the default) against an
    instant target: jobs/s through claim and outcome, enqueue-to-start p50/p95/p99, and
    the database connections it held."""
    with Queue(database) as queue:
        ids = queue.enqueue_many(NewJob("bash", "echo 1") for _ in range(jobs))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("select pg_stat_reset()")
    worker = Worker(
        WorkerConfig(
            conninfo=database,
            targets=("127.0.0.1:1",),
            concurrency=slots,
            prefetch=prefetch,
            migrate=False,
        ),
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
        at_end = table_sizes(sync, 4)
        # The worker's own vacuum (every few seconds past a threshold) meanwhile.
        await asyncio.sleep(3 * worker.config.vacuum_s)
        later = table_sizes(sync, 4)
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
        "prefetch": worker.config.prefetch_jobs,
        "jobs": jobs,
        "jobs_per_s": round(jobs / seconds),
        "enqueue_to_start": summary_ms([float(r[0]) for r in rows]),
        "database_connections": connections,
        "write_backs": worker.stats.write_backs,
        "at_end": at_end,
        "dead_tuples_later": later["dead_tuples"],
    }
