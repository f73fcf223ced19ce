"""SQL jobs against a real PostgreSQL server (scripts/postgres.sh, started here) through
the service's relay, in the real sandbox: values, errors with positions, one transaction
per job, the timeout and cancel stopping the query on the server, and what a job role
must not do. Also a named SQLite database that persists between jobs."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest

from gristmill.client import Client
from gristmill.config import load_config
from gristmill.credentials import Credentials
from gristmill.doctor import Status, run_checks
from gristmill.languages.registry import REPO_ROOT
from gristmill.offload import INLINE_BYTES
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb

from ..conftest import sandbox_work_dir

SCRIPT = REPO_ROOT / "scripts" / "postgres.sh"
JOB_ROLE = "gristmill_job"


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, str]]:
    """The throwaway cluster's libpq variables; a job role without privileges of note."""
    was_running = subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0
    subprocess.run([SCRIPT, "start"], check=True, capture_output=True, timeout=120)
    printed = subprocess.run([SCRIPT, "env"], check=True, capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for line in printed.splitlines():
        for word in shlex.split(line)[1:]:
            name, _, value = word.partition("=")
            env[name] = value
    with psycopg.connect(env["GRISTMILL_DATABASE_URL"], autocommit=True) as admin:
        exists = admin.execute("select 1 from pg_roles where rolname = %s", [JOB_ROLE]).fetchone()
        if not exists:
            admin.execute(f"create role {JOB_ROLE} login")
        admin.execute(f"grant create, usage on schema public to {JOB_ROLE}")
    yield env
    if not was_running:
        subprocess.run([SCRIPT, "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module", params=["nsjail", "process"])
def server(postgres: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    dsn = f"host={postgres['PGHOST']} port={postgres['PGPORT']} dbname={postgres['PGDATABASE']}"
    with sandbox_work_dir() as work_dir, sandbox_work_dir() as lite:
        # The database's own folder, writable by the jail's user.
        lite.chmod(0o777)
        config = load_config(
            environ={},
            overrides={
                "address": "127.0.0.1:0",
                "work_dir": work_dir,
                "sandbox_backend": request.param,
                "databases.main.dsn": dsn,
                "databases.main.role": JOB_ROLE,
                "databases.main.pool_size": "4",
                "databases.broken.dsn": "host=/nonexistent dbname=x password=hunter2",
                "databases.lite.kind": "sqlite",
                "databases.lite.path": str(lite / "lite.sqlite"),
            },
        )
        with BackgroundServer(config) as address:
            yield address


def run(address: str, code: str, args=None, db="main", wall_ms=10_000, **env: str) -> pb.Outcome:
    with Client(address) as client:
        return client.execute(
            "sql",
            code,
            args or {},
            env={"SQL_DATABASE": db, **env},
            limits=pb.Limits(wall_time_ms=wall_ms),
        )


def rows(outcome: pb.Outcome) -> object:
    assert outcome.verdict == pb.SUCCESS, (outcome.error, outcome.stderr.data)
    return json.loads(outcome.result_json)


def test_parameters_of_each_type_and_typed_values(server):
    code = """-- $1 n (int) = 2
-- $2 s (text)
-- $3 price (numeric) = 1.5
-- $4 doc (jsonb)
-- $5 flag (bool) = true
-- $6 day (date) = '2024-02-29'
select $1 * 21 as n, $2 as s, $3::numeric * 2 as price, $4::jsonb -> 'a' as a,
       $5 as flag, $6::date + 1 as next_day, '\\x00ff'::bytea as bytes,
       timestamptz '2024-01-02 03:04:05+00' at time zone 'UTC' as at, null::int as nothing,
       9223372036854775807::bigint as big
"""
    result = rows(run(server, code, {"s": "héllo", "doc": {"a": [1, 2]}}))
    assert result == [
        {
            "n": 42,
            "s": "héllo",
            "price": "3.0",
            "a": [1, 2],
            "flag": True,
            "next_day": "2024-03-01",
            "bytes": "AP8=",
            "at": "2024-01-02T03:04:05",
            "nothing": None,
            "big": 9223372036854775807,
        }
    ]


def test_describe_reads_positional_declarations(server):
    with Client(server) as client:
        schema = client.describe("sql", "-- $1 id (int)\n-- $2 name (text) = 'x'\nselect $1, $2")
    assert schema["properties"] == {
        "id": {"type": "integer"},
        "name": {"type": "string", "default": "x"},
    }
    assert schema["required"] == ["id"]


def test_several_statements_last_rows_or_every_result(server):
    table = f"t_{uuid.uuid4().hex[:8]}"
    code = f"""create table {table} (x text);
insert into {table} values ('a;b'), ($$c;$$);
select x from {table} order by x;
select count(*) as n from {table}"""
    assert rows(run(server, code)) == [{"n": 2}]
    assert rows(run(server, code, SQL_RESULTS="all")) == [
        {"rowcount": -1},
        {"rowcount": -1},
        {"rows": [{"x": "a;b"}, {"x": "c;"}]},
        {"rows": [{"n": 2}]},
    ]


def test_an_error_has_the_database_words_sqlstate_and_line(server):
    outcome = run(server, "select 1;\nselect\n  1 +\n  nope\nfrom pg_class")
    assert outcome.verdict == pb.ERROR
    assert outcome.error.name == "UndefinedColumn"
    assert 'column "nope" does not exist (SQLSTATE 42703)' in outcome.error.message
    assert outcome.error.stack[-1].line == 4


def test_an_undeclared_placeholder_is_refused_before_running(server):
    outcome = run(server, "-- $1 a (int)\nselect $1 + $2")
    assert outcome.verdict == pb.INVALID_ARGUMENTS
    assert "$2 is not declared" in outcome.error.message


def test_each_job_is_rolled_back_unless_it_asks_to_commit(server):
    table = f"kept_{uuid.uuid4().hex[:8]}"
    exists = f"select count(*) as n from pg_tables where tablename = '{table}'"
    rows(run(server, f"create table {table} (x int)"))
    assert rows(run(server, exists)) == [{"n": 0}]
    rows(run(server, f"create table {table} (x int)", SQL_COMMIT="1"))
    assert rows(run(server, exists)) == [{"n": 1}]
    failed = run(server, f"insert into {table} values (1); select 1/0", SQL_COMMIT="1")
    assert failed.verdict == pb.ERROR and failed.error.name == "DivisionByZero"
    assert rows(run(server, f"select count(*) as n from {table}")) == [{"n": 0}]


def _still_running(postgres: dict[str, str], marker: str) -> int:
    with psycopg.connect(postgres["GRISTMILL_DATABASE_URL"], autocommit=True) as admin:
        found = admin.execute(
            "select count(*) from pg_stat_activity where query like %s and pid <> pg_backend_pid()",
            [f"%{marker}%"],
        ).fetchone()
    return int(found[0]) if found else 0


def _gone(postgres: dict[str, str], marker: str) -> bool:
    for _ in range(50):
        if not _still_running(postgres, marker):
            return True
        time.sleep(0.1)
    return False


def test_the_timeout_stops_the_query_on_the_server(server, postgres):
    marker = uuid.uuid4().hex
    outcome = run(server, f"select pg_sleep(60), '{marker}'", wall_ms=1500)
    assert outcome.verdict == pb.TIMEOUT
    assert _gone(postgres, marker)
    assert rows(run(server, "select 1 as alive")) == [{"alive": 1}]


def test_cancelling_the_job_cancels_the_query(server, postgres):
    marker = uuid.uuid4().hex
    job_id = f"cancel-{marker}"
    with Client(server) as client:
        box: dict[str, pb.Outcome] = {}
        thread = threading.Thread(
            target=lambda: box.setdefault(
                "outcome",
                client.execute(
                    "sql",
                    f"select pg_sleep(60), '{marker}'",
                    env={"SQL_DATABASE": "main"},
                    job_id=job_id,
                    limits=pb.Limits(wall_time_ms=30_000),
                ),
            )
        )
        thread.start()
        for _ in range(100):
            if _still_running(postgres, marker):
                break
            time.sleep(0.1)
        assert client.cancel(job_id)
        thread.join(30)
    assert box["outcome"].verdict == pb.CANCELLED
    assert _gone(postgres, marker)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("set role postgres", "permission denied to set role"),
        ("select pg_read_file('/etc/passwd')", "permission denied for function pg_read_file"),
        ("copy (select 1) to program 'id'", "pg_execute_server_program"),
        ("create extension dblink", "permission denied|not available|could not open"),
        ("create extension postgres_fdw", "permission denied|not available|could not open"),
        ("alter role gristmill_job superuser", "permission denied|must be superuser"),
    ],
)
def test_what_a_job_role_must_not_do_is_refused(server, code, words):
    outcome = run(server, code)
    assert outcome.verdict == pb.ERROR, outcome.result_json
    assert outcome.error.name
    assert re.search(words, outcome.error.message), outcome.error.message


def test_ten_million_rows_stop_at_the_result_cap(server):
    outcome = run(
        server,
        # Rows of 1 KiB: the cap is reached after ~65 000 of them, promptly.
        "select i, repeat('x', 1000) as filler from generate_series(1, 10000000) as i",
        wall_ms=60_000,
    )
    assert outcome.verdict == pb.OUTPUT_LIMIT


def test_an_unknown_or_unreachable_database_is_named_never_its_password(server):
    with pytest.raises(grpc.RpcError) as unknown:
        run(server, "select 1", db="elsewhere")
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SQL_DATABASE" in unknown.value.details() and "elsewhere" in unknown.value.details()
    broken = run(server, "select 1", db="broken")
    assert broken.verdict == pb.ERROR
    assert "'broken' cannot be reached" in broken.error.message
    assert "hunter2" not in str(broken)


def test_a_named_sqlite_database_persists_committed_work_only(server):
    table = f"t_{uuid.uuid4().hex[:8]}"
    rows(run(server, f"create table {table} (x integer)", db="lite", SQL_COMMIT="1"))
    rows(run(server, f"insert into {table} values (1)", db="lite"))
    rows(run(server, f"insert into {table} values (2)", db="lite", SQL_COMMIT="true"))
    assert rows(run(server, f"select x from {table}", db="lite")) == [{"x": 2}]
    refused = run(server, "attach database '/etc/passwd' as p", db="lite")
    assert refused.verdict == pb.ERROR


def test_the_job_role_never_reaches_the_sandbox(server):
    outcome = run(server, "select current_user as me, session_user as login")
    assert rows(outcome) == [{"me": JOB_ROLE, "login": JOB_ROLE}]


def test_doctor_warns_about_a_dangerous_job_role(postgres):
    dsn = f"host={postgres['PGHOST']} port={postgres['PGPORT']} dbname={postgres['PGDATABASE']}"
    config = load_config(
        environ={},
        overrides={
            "databases.safe.dsn": dsn,
            "databases.safe.role": JOB_ROLE,
            "databases.admin.dsn": f"{dsn} user=postgres",
            "databases.gone.dsn": "host=/nonexistent dbname=x password=hunter2",
        },
    )
    checks = {c.name: c for c in run_checks(config)}
    assert checks["database safe"].status is Status.OK, checks["database safe"].detail
    assert checks["database admin"].status is Status.WARN
    assert "is a superuser" in checks["database admin"].detail
    assert "TO PROGRAM" in checks["database admin"].detail
    assert checks["database gone"].status is Status.WARN
    assert "hunter2" not in checks["database gone"].detail


def test_nothing_of_a_job_is_left_on_a_pooled_connection(server):
    leave = (
        "set application_name = 'leaked';\n"
        "create temp table tt (x int);\n"
        "select pg_advisory_lock(42) as locked"
    )
    rows(run(server, leave, SQL_COMMIT="1"))
    look = (
        "select current_setting('application_name') as app, to_regclass('pg_temp.tt') as temp,"
        " (select count(*) from pg_locks where locktype = 'advisory') as locks"
    )
    for _ in range(4):  # whichever pooled connection it gets
        assert rows(run(server, look)) == [{"app": "gristmill-job", "temp": None, "locks": 0}]


def test_a_connection_whose_return_outlasts_its_job_comes_back_clean(server, monkeypatch):
    """The job's end often comes while its connection is being returned to the pool (rolled
    back, `DISCARD ALL`): the return is waited for, never cut off, which would leave the
    job's session open with its advisory locks until the garbage collector closed it."""
    relay = next(
        module
        for module in list(sys.modules.values())
        if (getattr(module, "__file__", None) or "").endswith("runtimes/sql/relay.py")
    )
    release = relay.Relay.release

    async def slow_release(self: object, connection: object, reusable: bool) -> None:
        await asyncio.sleep(0.3)  # the job ends meanwhile
        await release(self, connection, reusable)

    monkeypatch.setattr(relay.Relay, "release", slow_release)
    first = rows(run(server, "select pg_backend_pid() as pid, pg_advisory_lock(43) as locked"))
    monkeypatch.undo()
    look = (
        "select pg_backend_pid() as pid,"
        " (select count(*) from pg_locks where locktype = 'advisory') as locks"
    )
    # The same connection (the last one returned is the next one taken), with no lock.
    assert rows(run(server, look)) == [{"pid": first[0]["pid"], "locks": 0}]  # type: ignore[index]


@pytest.mark.parametrize("db", ["main", "lite"])
@pytest.mark.parametrize("statement", ["commit", "begin", "end", "rollback"])
def test_a_job_cannot_end_its_own_transaction(server, db, statement):
    table = f"t_{uuid.uuid4().hex[:8]}"
    outcome = run(server, f"create table {table} (x int);\n{statement};", db=db)
    assert outcome.verdict == pb.ERROR
    assert outcome.error.stack[-1].line == 2
    exists = run(server, f"select count(*) as n from {table}", db=db)
    assert exists.verdict == pb.ERROR  # the table was never committed


def test_a_savepoint_is_the_jobs_own(server):
    code = (
        "create temp table s (x int);\n"
        "insert into s values (1);\n"
        "savepoint a;\n"
        "insert into s values (2);\n"
        "rollback to savepoint a;\n"
        "select count(*) as n from s"
    )
    assert rows(run(server, code)) == [{"n": 1}]


def test_doctor_says_when_tenants_share_a_role_or_it_holds_settings(postgres):
    dsn = f"host={postgres['PGHOST']} port={postgres['PGPORT']} dbname={postgres['PGDATABASE']}"
    held = f"gm_held_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres["GRISTMILL_DATABASE_URL"], autocommit=True) as admin:
        admin.execute(f"create role {held} login")
        for tenant in ("job_alice", "job_bob"):
            if not admin.execute("select 1 from pg_roles where rolname = %s", [tenant]).fetchone():
                admin.execute(f"create role {tenant} login")
        try:
            # PostgreSQL lets any role set its own defaults: what one tenant's job can do.
            with psycopg.connect(f"{dsn} user={held}", autocommit=True) as job:
                job.execute(f"alter role {held} set work_mem = '1MB'")
            config = load_config(
                environ={},
                overrides={
                    "auth.tokens": "alice:" + "a" * 32 + " bob:" + "b" * 32,
                    "tenants.alice.max_concurrent_jobs": "2",
                    "tenants.bob.max_concurrent_jobs": "2",
                    "databases.shared.dsn": dsn,
                    "databases.shared.role": JOB_ROLE,
                    "databases.held.dsn": dsn,
                    "databases.held.role": held,
                    "databases.own.dsn": dsn,
                    "databases.own.role": "job_{tenant}",
                },
            )
            checks = {c.name: c for c in run_checks(config)}
        finally:
            admin.execute(f"drop role {held}")
    assert checks["database shared"].status is Status.OK
    assert checks["database shared tenants"].status is Status.WARN
    assert "every tenant's jobs connect as one role" in checks["database shared tenants"].detail
    assert "pg_stat_activity" in checks["database shared tenants"].detail
    assert checks["database held"].status is Status.WARN
    assert "holds settings every job of it starts with (work_mem=1MB)" in (
        checks["database held"].detail
    )
    assert checks["database own (alice)"].status is Status.OK, checks["database own (alice)"]
    assert "'job_alice'" in checks["database own (alice)"].detail
    assert "'job_bob'" in checks["database own (bob)"].detail
    assert "database own tenants" not in checks


@pytest.fixture(scope="module")
def tenant_server(postgres: dict[str, str]) -> Iterator[str]:
    """A server with two tenants (tokens) and a database giving each its own role."""
    dsn = f"host={postgres['PGHOST']} port={postgres['PGPORT']} dbname={postgres['PGDATABASE']}"
    with psycopg.connect(postgres["GRISTMILL_DATABASE_URL"], autocommit=True) as admin:
        for role in ("job_alice", "job_bob"):
            if not admin.execute("select 1 from pg_roles where rolname = %s", [role]).fetchone():
                admin.execute(f"create role {role} login")
    with sandbox_work_dir() as work_dir:
        config = load_config(
            environ={},
            overrides={
                "address": "127.0.0.1:0",
                "work_dir": work_dir,
                "sandbox_backend": "process",
                "auth.tokens": "alice:alice-secret bob:bob-secret",
                "databases.main.dsn": dsn,
                "databases.main.role": "job_{tenant}",
            },
        )
        with BackgroundServer(config) as address:
            yield address


def test_each_tenants_jobs_connect_as_its_own_role(tenant_server):
    """The call's tenant reaches the relay: each tenant's job is its role, end to end."""
    for tenant in ("alice", "bob", "alice"):
        credentials = Credentials(token=f"{tenant}-secret")
        with Client(tenant_server, credentials=credentials) as client:
            outcome = client.execute(
                "sql",
                "select current_user as me, session_user as login",
                {},
                env={"SQL_DATABASE": "main"},
            )
        assert rows(outcome) == [{"me": f"job_{tenant}", "login": f"job_{tenant}"}]


@pytest.mark.parametrize("db", ["main", "lite"])
def test_a_script_past_the_inline_size_runs_against_its_named_database(server, db):
    # Past INLINE_BYTES a job's message was built in a worker process, which has neither
    # the server's databases nor the relay's token: "unknown database".
    padding = "-- " + "x" * 1000 + "\n"
    code = padding * (INLINE_BYTES // len(padding) + 1) + "select 42 as answer"
    assert len(code) > INLINE_BYTES
    assert rows(run(server, code, db=db)) == [{"answer": 42}]


def test_doctor_warns_about_a_role_that_sees_or_signals_every_roles_backends(postgres):
    dsn = f"host={postgres['PGHOST']} port={postgres['PGPORT']} dbname={postgres['PGDATABASE']}"
    spy = f"gm_spy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres["GRISTMILL_DATABASE_URL"], autocommit=True) as admin:
        admin.execute(f"create role {spy} login in role pg_read_all_stats, pg_signal_backend")
        try:
            config = load_config(
                environ={}, overrides={"databases.spy.dsn": dsn, "databases.spy.role": spy}
            )
            check = {c.name: c for c in run_checks(config)}["database spy"]
        finally:
            admin.execute(f"drop role {spy}")
    assert check.status is Status.WARN
    assert "pg_read_all_stats" in check.detail and "pg_signal_backend" in check.detail
