"""The fault test: jobs of two languages through 2 workers and 2 real servers while a
worker is killed with SIGKILL, a server is killed and restarted, and PostgreSQL is
restarted. Afterwards every job has exactly one outcome, none lost, none duplicated,
and nothing the servers started is left running.

The issue asks for 2,000 jobs; on the 2-core machine this suite runs on, shared with
others, the default is 400 so that the test stays within about two minutes:
GRISTMILL_QUEUE_FAULT_JOBS=2000 runs the full size.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from gristmill.client import Client
from gristmill.queue import migrate
from tests.conftest import sandbox_work_dir
from tests.queue.cluster import PostgresCluster, _free_port, find_pg_bin

JOBS = int(os.environ.get("GRISTMILL_QUEUE_FAULT_JOBS", "400"))
DEADLINE_S = 600.0
GRISTMILL = [sys.executable, "-m", "gristmill"]

PYTHON_JOB = "def main(i: int):\n    return i\n"
BASH_JOB = 'i="$1"\necho "{\\"i\\": $i}" >&3\n'

# Each move of a job to the history (its one finish), as the database saw it: a job
# recorded twice would show up here twice, whatever the final rows say.
AUDIT = """
create table outcome_log (job_id text not null, state text not null);
create function log_outcome() returns trigger language plpgsql as $$
begin
    insert into outcome_log values (coalesce(new.key, new.uid::text), new.state);
    return null;
end $$;
create trigger history_audit after insert on gristmill.history for each row
    execute function log_outcome();
"""


class Server:
    def __init__(self, work_dir: Path, logs: Path, name: str) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.work_dir = work_dir
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.descendants: list[psutil.Process] = []
        self.pids: list[int] = []  # every process this server ran as (it is restarted)

    def start(self) -> None:
        argv = [*GRISTMILL, "serve", "--address", self.address, "--work-dir", str(self.work_dir)]
        argv += ["--concurrency", "2"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.pids.append(self.process.pid)
        end = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, f"server died: see {self.log}"
            try:
                with Client(self.address) as client:
                    client.list_runtimes(timeout_s=2)
                return
            except Exception:
                assert time.monotonic() < end, f"server did not start: see {self.log}"
                time.sleep(0.2)

    def remember_descendants(self) -> None:
        assert self.process is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            self.descendants += psutil.Process(self.process.pid).children(recursive=True)

    def kill(self) -> None:
        assert self.process is not None
        self.remember_descendants()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.remember_descendants()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class WorkerProcess:
    def __init__(self, conninfo: str, targets: list[str], logs: Path, name: str) -> None:
        self.argv = [*GRISTMILL, "worker", "--database", conninfo, "--concurrency", "4"]
        self.argv += ["--lease-s", "5", "--poll-s", "1", "--grace-s", "10"]
        for target in targets:
            self.argv += ["--target", target]
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own: it gets restarted."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        pytest.skip("no PostgreSQL server installed")
    cluster = PostgresCluster(pg_bin)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _finished(conninfo: str) -> int:
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            row = conn.execute(
                "select count(*) from gristmill.jobs where state <> all('{queued,running}')"
            ).fetchone()
    except psycopg.OperationalError:
        return -1  # restarting
    return int(row[0]) if row else 0


def _job_cgroups(pids: list[int]) -> list[Path]:
    found: list[Path] = []
    for pid in pids:
        found += Path("/sys/fs/cgroup").glob(f"*/gristmill/server-{pid}-*/job-*")
        found += Path("/sys/fs/cgroup").glob(f"gristmill/server-{pid}-*/job-*")
    return found


def test_every_job_gets_exactly_one_outcome_through_worker_server_and_database_faults(
    cluster: PostgresCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conninfo = cluster.conninfo
    migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(AUDIT.encode())
    logs = tmp_path
    with contextlib.ExitStack() as stack:
        dirs = [stack.enter_context(sandbox_work_dir()) for _ in range(2)]
        servers = [Server(dirs[i], logs, f"server-{i}") for i in range(2)]
        for server in servers:
            stack.callback(server.stop)
            server.start()
        targets = [server.address for server in servers]
        workers = [WorkerProcess(conninfo, targets, logs, f"worker-{i}") for i in range(3)]
        for worker in workers:
            stack.callback(worker.stop)
        with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "select gristmill.enqueue(%s, %s, jsonb_build_object('i', %s::int), id => %s)",
                [
                    ("python" if i % 2 else "bash", PYTHON_JOB if i % 2 else BASH_JOB, i, f"j{i}")
                    for i in range(JOBS)
                ],
            )
        started = time.monotonic()
        workers[0].start()
        workers[1].start()

        def replace_worker() -> None:
            workers[0].kill()
            workers[2].start()

        faults: list[tuple[float, str, Callable[[], None]]] = [
            (0.15, "SIGKILL worker 0, start worker 2", replace_worker),
            (0.35, "SIGKILL server 0", servers[0].kill),
            (0.40, "restart server 0", servers[0].start),
            (0.60, "restart PostgreSQL", cluster.restart),
        ]
        seen: list[str] = []
        while (done := _finished(conninfo)) < JOBS:
            assert time.monotonic() - started < DEADLINE_S, f"{done}/{JOBS} after the deadline"
            if faults and done >= faults[0][0] * JOBS:
                _, what, act = faults.pop(0)
                act()
                seen.append(f"{what} at {done}/{JOBS}")
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        for worker in workers:
            worker.stop()
        for server in servers:
            server.stop()
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "select id, language, state, verdict, result, retries, attempts from gristmill.jobs"
        ).fetchall()
        logged = conn.execute("select job_id, count(*) from outcome_log group by job_id").fetchall()
    retries = sum(row[5] for row in rows)
    with capsys.disabled():  # reported in every run, passing or not
        print(
            f"\n{JOBS} jobs in {elapsed:.1f} s; faults: {seen}; retries: {retries}; "
            f"re-run attempts: {sum(max(0, row[6] - 1) for row in rows)}"
        )
    assert not faults, f"faults not injected: {faults}"
    assert len(rows) == JOBS
    wrong = [
        row
        for row in rows
        if (row[2], row[3]) != ("done", "SUCCESS")
        or row[4] != (int(row[0][1:]) if row[1] == "python" else {"i": int(row[0][1:])})
    ]
    assert wrong == []
    assert sorted(count for _, count in logged) == [1] * JOBS, "a job recorded twice"
    # Nothing the servers started survives them: no process, no job cgroup.
    descendants = [p for server in servers for p in server.descendants]
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    pids = [pid for server in servers for pid in server.pids]
    assert _job_cgroups(pids) == []
