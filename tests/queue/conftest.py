"""The queue's fixtures: a PostgreSQL cluster of their own for the session, a fresh
database per test, and gristmill servers over the fake runner."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gristmill.isolation.backend import SandboxInfo
from gristmill.model import Job, JobEvent, Outcome, Output, Verdict
from gristmill.server import BackgroundServer
from tests.conftest import ConfigFactory
from tests.queue.cluster import PostgresCluster, find_pg_bin

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster started for the test session in a temp dir, stopped after."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        pytest.skip("no PostgreSQL server installed (scripts/install-system.sh installs it)")
    cluster = PostgresCluster(pg_bin)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def database(postgres: PostgresCluster) -> str:
    """The conninfo of a new, empty database on the session's cluster."""
    name = f"queue_test_{next(_databases)}"
    with psycopg.connect(postgres.conninfo, autocommit=True) as conn:
        conn.execute(f'create database "{name}"'.encode())
    return postgres.conninfo.replace("dbname=postgres", f"dbname={name}")


def finish_jobs(conn: psycopg.Connection[Any], where: str, params: Any = None) -> int:
    """Ends the running jobs of `gristmill.live` matching `where` as done, as their worker
    would (`gristmill.finish` under their tokens); returns how many moved to the history."""
    row = conn.execute(
        f"""
        with j as (select uid, lease_token from gristmill.live
                    where state = 'running' and ({where}))
        select count(*) from gristmill.finish(array(select uid from j),
            array(select lease_token from j), array(select 'done'::text from j),
            null, null, null, null, null, null, null, null, null, null)
        """.encode(),
        params,
    ).fetchone()
    return int(row[0]) if row else 0


class ScriptedRunner:
    """Runs "jobs" by their code: `verdict:NAME` answers that verdict, `sleep:S` succeeds
    after S seconds, `wait` runs until cancelled, `crash` fails the service (INTERNAL);
    anything else succeeds at once with the job's arguments as its result.

    `runs` counts the runs started per job id; `cancelled` holds the ids that saw Cancel.
    """

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.cancelled: set[str] = set()

    def sandbox_info(self) -> SandboxInfo:
        return SandboxInfo(backend="fake", enforced_limits=(), detail="a test double")

    async def run(
        self,
        job: Job,
        on_event: Callable[[JobEvent], None] | None = None,
        cancel: asyncio.Event | None = None,
    ) -> Outcome:
        self.runs[job.id] = self.runs.get(job.id, 0) + 1
        cancel = cancel or asyncio.Event()
        code = job.code
        if code == "crash":
            raise RuntimeError("the scripted runner crashed")
        if code == "wait" or code.startswith("sleep:"):
            seconds = float(code.partition(":")[2]) if code != "wait" else 600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), seconds)
        if cancel.is_set():
            self.cancelled.add(job.id)
            return Outcome(job_id=job.id, verdict=Verdict.CANCELLED, sandbox="fake")
        if code.startswith("verdict:"):
            verdict = Verdict[code.partition(":")[2]]
            return Outcome(job_id=job.id, verdict=verdict, detail="scripted", sandbox="fake")
        return Outcome(
            job_id=job.id,
            verdict=Verdict.SUCCESS,
            result_json=json.dumps(dict(job.args)),
            stdout=Output(data=b"out"),
            sandbox="fake",
        )


ScriptedServer = Callable[..., tuple[str, ScriptedRunner]]


@pytest.fixture
def scripted_server(
    make_config: ConfigFactory, fake_runtimes: Path, fake_profiles: Path
) -> Iterator[ScriptedServer]:
    """Starts servers over a `ScriptedRunner` (language "fake" unless `runtimes_dir` is
    given); yields (address, runner)."""
    servers: list[BackgroundServer] = []

    def start(**overrides: object) -> tuple[str, ScriptedRunner]:
        runner = ScriptedRunner()
        config = make_config(
            **{"runtimes_dir": fake_runtimes, "profiles_dir": fake_profiles, **overrides}
        )
        server = BackgroundServer(config, runner=runner)
        servers.append(server)
        return server.__enter__(), runner

    yield start
    for server in servers:
        server.__exit__(None, None, None)
