"""What the queue benches share: a throwaway PostgreSQL, a server, timings, a history
filled with finished jobs, and the sizes of the queue's tables."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent

from gristmill.client import Client  # noqa: E402
from gristmill.jobs.workspace import unmount_jobs_dir  # noqa: E402
from gristmill.queue import (  # noqa: E402
    current_version,
)

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


def table_sizes(conn: psycopg.Connection[Any], version: int) -> dict[str, Any]:
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
