"""The SQL relay as the boundary: a raw client on its socket, as a job that replaced its
wrapper would be, against the real PostgreSQL the tests start. Whatever it sends, the
job's transaction is rolled back unless the request asked to commit, never committed
unless every statement succeeded, and the relay's report is the truth."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psycopg
import pytest

from gristmill.config import DatabaseConfig
from gristmill.languages import Registry
from gristmill.model import Job, Limits

from .test_sql_postgres import JOB_ROLE, postgres  # noqa: F401 (the cluster's fixture)

LIMITS = Limits(
    wall_time_ms=20_000, memory_bytes=1 << 26, cpu_time_ms=1000, processes=4, output_bytes=1024
)
TOKEN = "a" * 32
LONGEST = 1 << 20
"""The longest statement of the jobs here (the relay refuses a longer one)."""


@pytest.fixture(scope="module")
def relay_module() -> ModuleType:
    Registry().get("sql")  # loads runtimes/sql as its package
    return importlib.import_module("gristmill_runtime_sql.relay")


@pytest.fixture
def dsn(postgres: dict[str, str]) -> str:  # noqa: F811
    return f"host={postgres['PGHOST']} port={postgres['PGPORT']} dbname={postgres['PGDATABASE']}"


@pytest.fixture
def admin(postgres: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:  # noqa: F811
    with psycopg.connect(postgres["GRISTMILL_DATABASE_URL"], autocommit=True) as connection:
        yield connection


def statement(sql: str) -> bytes:
    return json.dumps({"sql": sql, "params": [], "types": []}).encode() + b"\n"


END = b'{"end": true}\n'


async def talk(
    relay: Any, lines: list[bytes], commit: bool = False, tenant: str = "", longest: int = LONGEST
) -> list[dict[str, Any]]:
    """Every reply of one job's conversation, a chunk of rows as {"rows": [...]}: the
    token, then `lines` as they are (a last one without its newline is a half line, the
    client's side then shut)."""
    job = Job("j", "sql", "", "main", {}, LIMITS, tenant=tenant)
    async with relay.serve(job, TOKEN, longest, commit) as folder:
        reader, writer = await asyncio.open_unix_connection(str(folder / "relay.sock"))
        writer.write(json.dumps({"token": TOKEN}).encode() + b"\n")
        for line in lines:
            writer.write(line)
        if lines and not lines[-1].endswith(b"\n"):
            writer.write_eof()
        await writer.drain()
        replies: list[dict[str, Any]] = []
        while line := await reader.readline():
            reply = json.loads(line)
            if "chunk" in reply:
                chunk = await reader.readexactly(reply["chunk"])
                reply = {"rows": json.loads(b"[" + chunk + b"]")}
            replies.append(reply)
        writer.close()
    return replies


async def converse(
    relay_module: ModuleType,
    dsn: str,
    lines: list[bytes],
    commit: bool = False,
    longest: int = LONGEST,
) -> list[dict[str, Any]]:
    """`talk` with a relay of its own, its connections closed after."""
    relay = relay_module.Relay("main", DatabaseConfig(dsn=dsn, role=JOB_ROLE, pool_size=2))
    replies = await talk(relay, lines, commit, longest=longest)
    for connection in relay._idle:
        await connection.close()
    return replies


def committed(admin: psycopg.Connection[Any], table: str) -> bool:
    found = admin.execute("select to_regclass(%s) is not null", [table]).fetchone()
    return bool(found and found[0])


ATTACKS = [
    ";COMMIT",
    "/**/COMMIT",
    "BEGIN; COMMIT",
    "select 1; commit",
    "END",
    "ABORT",
    "ROLLBACK",
    "START TRANSACTION",
    "PREPARE TRANSACTION 'x'",
    "COMMIT AND CHAIN",
    "COMMIT PREPARED 'x'",
    "do $$ begin commit; end $$",
    "selec 1",  # text the grammar cannot read is never sent
    "copy pg_class from stdin",  # protocol features the relay does not offer
    "copy (select 1) to stdout",
]


@pytest.mark.attack("sql relay: transaction control")
@pytest.mark.parametrize("commit", [False, True], ids=["rollback", "commit"])
@pytest.mark.parametrize("attack", ATTACKS)
async def test_a_raw_client_cannot_end_the_jobs_transaction(
    relay_module, dsn, admin, attack, commit, caplog
):
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module,
        dsn,
        [statement(f"create table {table} (x int)"), statement(attack), END],
        commit=commit,
    )
    assert not committed(admin, table)
    assert replies[0] == {"ready": "main"}
    assert replies[1] == {"done": -1}
    assert "error" in replies[-1], replies
    assert replies[-1]["ended"] == "rolled back"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.attack("sql relay: transaction control")
async def test_a_procedure_that_commits_is_refused_by_the_server(relay_module, dsn, admin):
    table = f"t_{uuid.uuid4().hex[:12]}"
    procedure = f"p_{table}"
    replies = await converse(
        relay_module,
        dsn,
        [
            statement(f"create table {table} (x int)"),
            statement(
                f"create procedure {procedure}() language plpgsql as $$ begin commit; end $$"
            ),
            statement(f"call {procedure}()"),
            END,
        ],
        commit=True,
    )
    assert replies[-1]["error"]["sqlstate"] == "2D000"  # invalid transaction termination
    assert replies[-1]["ended"] == "rolled back"
    assert not committed(admin, table)


@pytest.mark.attack("sql relay: transaction control")
@pytest.mark.parametrize("commit", [False, True], ids=["rollback", "commit"])
async def test_a_statement_the_server_reads_otherwise_than_the_grammar_is_not_run(
    relay_module, dsn, admin, commit
):
    """With standard_conforming_strings off, PostgreSQL reads `\\'` as a quote: the grammar
    check (which reads it as on) sees one SELECT of a string, the server a SELECT and a
    COMMIT. The extended protocol refuses more than one statement, so nothing runs."""
    desync = "select 'a\\'' ; commit -- '"
    relay_module.check_statement(desync)  # one statement to the grammar: it reaches the server
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module,
        dsn,
        [
            statement(f"create table {table} (x int)"),
            statement("set standard_conforming_strings = off"),
            statement(desync),
            END,
        ],
        commit=commit,
    )
    assert "multiple commands" in replies[-1]["error"]["message"], replies
    assert replies[-1]["ended"] == "rolled back"
    assert not committed(admin, table)


@pytest.mark.parametrize("commit", [False, True], ids=["rollback", "commit"])
async def test_savepoints_are_the_jobs_own(relay_module, dsn, admin, commit):
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module,
        dsn,
        [
            statement(f"create table {table} (x int)"),
            statement("savepoint a"),
            statement(f"insert into {table} values (1)"),
            statement("rollback to savepoint a"),
            statement(f"insert into {table} values (2)"),
            statement("release a"),
            END,
        ],
        commit=commit,
    )
    assert replies[-1] == {"ended": "committed" if commit else "rolled back"}
    assert committed(admin, table) is commit
    if commit:
        assert admin.execute(f"select array_agg(x) from {table}").fetchone() == ([2],)


@pytest.mark.attack("sql relay: transaction control")
async def test_nothing_after_the_end_is_run(relay_module, dsn, admin):
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module,
        dsn,
        [statement(f"create table {table} (x int)"), END, statement(f"drop table {table}")],
        commit=True,
    )
    assert replies[-1] == {"ended": "committed"}
    assert committed(admin, table)


@pytest.mark.parametrize(
    "line",
    [
        json.dumps({"token": TOKEN}).encode() + b"\n",  # a second token line
        b"garbage\n",
        b"[1, 2]\n",
        b"\xff\xfe\n",
        b"[" * 100_000 + b"\n",
        b'{"sql": "select 1"}\n',  # missing keys
        b'{"sql": 1, "params": [], "types": []}\n',
        b'{"sql": "select $1", "params": [1], "types": []}\n',
        b'{"sql": "select $1", "params": [1], "types": ["money"]}\n',
        b'{"sql": "select $1", "params": [5], "types": ["blob"]}\n',
        b'{"sql": "select $1", "params": ["%%%"], "types": ["blob"]}\n',
        b'{"sql": "select 1\\u0000; commit", "params": [], "types": []}\n',
        b'{"sql": "select \'\\ud800\'", "params": [], "types": []}\n',
        b'{"sql": "select $1", "params": ["\\ud800"], "types": ["text"]}\n',
        b'{"end": 1}\n',
        b'{"end": true, "commit": true}\n',
        b'{"end": true}',  # a half line: the client's side shut before its newline
        b'{"sql": "sel',
    ],
)
@pytest.mark.attack("sql relay: hostile bytes")
async def test_a_malformed_request_ends_the_run_rolled_back(relay_module, dsn, admin, line, caplog):
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module, dsn, [statement(f"create table {table} (x int)"), line, END], commit=True
    )
    assert replies[-1]["error"]["name"] == "ProtocolError", replies
    assert replies[-1]["ended"] == "rolled back"
    assert not committed(admin, table)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.attack("sql relay: hostile bytes")
async def test_a_deeply_nested_statement_is_read_and_run(relay_module, dsn, caplog):
    """PostgreSQL's grammar nests `1+1+...` a level per term: a thousand, which
    PostgreSQL runs, are read as the one statement they are (the parse tree decoded as
    Python objects passed the interpreter's recursion limit: a traceback in the
    service's log and no reply)."""
    replies = await converse(
        relay_module, dsn, [statement("select 1" + "+1" * 1000 + " as n"), END]
    )
    assert {"rows": [{"n": 1001}]} in replies, replies
    assert replies[-1] == {"ended": "rolled back"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.attack("sql relay: hostile bytes")
async def test_a_statement_longer_than_the_jobs_own_is_never_parsed(
    relay_module, dsn, admin, monkeypatch
):
    """A job's statements are pieces of its code, which the service has read: one longer
    than the longest of them ends the run before the relay parses it (an 8 MB select
    list held the event loop 12 s and took 1.3 GB)."""
    parsed: list[str] = []
    monkeypatch.setattr(relay_module, "check_statement", parsed.append)
    table = f"t_{uuid.uuid4().hex[:12]}"
    create = f"create table {table} (x int)"
    replies = await converse(
        relay_module,
        dsn,
        [statement(create), statement("select 1" + ",1" * len(create)), END],
        commit=True,
        longest=len(create),
    )
    assert replies[-1]["error"]["name"] == "ProtocolError", replies
    assert f"the job's longest is {len(create)}" in replies[-1]["error"]["message"]
    assert replies[-1]["ended"] == "rolled back"
    assert parsed == [create]
    assert not committed(admin, table)


@pytest.mark.attack("sql relay: transaction control")
async def test_a_long_statement_is_checked_as_a_short_one(relay_module, dsn, admin):
    """Past `THREAD_PARSE_CHARS` the grammar's check runs beside the event loop, and
    refuses the same."""
    table = f"t_{uuid.uuid4().hex[:12]}"
    hidden = "/*" + " " * relay_module.THREAD_PARSE_CHARS + "*/ COMMIT"
    replies = await converse(
        relay_module, dsn, [statement(f"create table {table} (x int)"), statement(hidden), END]
    )
    assert replies[-1]["error"]["name"] == "TransactionControl", replies
    assert replies[-1]["ended"] == "rolled back"
    assert not committed(admin, table)


@pytest.mark.attack("sql relay: hostile bytes")
async def test_a_line_past_the_limit_ends_the_run(relay_module, dsn, admin, monkeypatch):
    monkeypatch.setattr(relay_module, "LINE_LIMIT", 4096)
    table = f"t_{uuid.uuid4().hex[:12]}"
    long = statement("select '" + "x" * 10_000 + "'")
    replies = await converse(
        relay_module, dsn, [statement(f"create table {table} (x int)"), long, END], commit=True
    )
    assert replies[-1]["error"]["name"] == "ProtocolError"
    assert "over 4096 bytes" in replies[-1]["error"]["message"]
    assert not committed(admin, table)


@pytest.mark.attack("sql relay: hostile bytes")
@pytest.mark.parametrize("token", [b'{"token": 5}\n', b'{"token": "\xc3\xa9"}\n', b"{}\n"])
async def test_a_bad_token_is_refused_before_any_connection(relay_module, dsn, token):
    relay = relay_module.Relay("main", DatabaseConfig(dsn=dsn, role=JOB_ROLE))
    job = Job("j", "sql", "", "main", {}, LIMITS)
    async with relay.serve(job, TOKEN, LONGEST, True) as folder:
        reader, writer = await asyncio.open_unix_connection(str(folder / "relay.sock"))
        writer.write(token)
        reply = json.loads(await reader.readline())
        writer.close()
    assert reply["error"]["name"] == "ProtocolError"
    assert not relay._idle


@pytest.mark.parametrize(
    ("attack", "ended"),
    [("commit", "committed"), ("commit and chain", "committed"), ("rollback", "rolled back")],
)
@pytest.mark.attack("sql relay: transaction control")
async def test_past_the_grammar_a_left_transaction_ends_the_run_with_the_truth(
    relay_module, dsn, admin, monkeypatch, attack, ended
):
    """Independent of parsing: with the grammar's check gone, a statement that ends the
    job's transaction is seen at the next request (another transaction id, or none), the
    run ends, and the report says what the server did to it."""
    monkeypatch.setattr(relay_module, "check_statement", lambda sql: None)
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module,
        dsn,
        [statement(f"create table {table} (x int)"), statement(attack), statement("select 1"), END],
    )
    assert replies[-1]["error"]["name"] == "TransactionControl", replies
    assert replies[-1]["ended"] == ended
    assert committed(admin, table) is (ended == "committed")
    if ended == "committed":
        admin.execute(f"drop table {table}")


@pytest.mark.attack("sql relay: transaction control")
async def test_a_failed_commit_is_reported_rolled_back(relay_module, dsn, admin):
    """A deferred constraint fails at the commit: the report is the error, rolled back."""
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module,
        dsn,
        [
            statement(f"create table {table} (x int unique deferrable initially deferred)"),
            statement(f"insert into {table} values (1), (1)"),
            END,
        ],
        commit=True,
    )
    assert replies[-1]["error"]["name"] == "UniqueViolation"
    assert replies[-1]["ended"] == "rolled back"
    assert not committed(admin, table)


@pytest.mark.attack("sql relay: transaction control")
async def test_past_the_grammar_a_transaction_ended_before_writing_committed_nothing(
    relay_module, dsn, admin, monkeypatch
):
    """A read-only transaction has no id to check: ended and chained before any write, it
    committed nothing, and what the job writes after is in the transaction the relay
    ends (rolled back here)."""
    monkeypatch.setattr(relay_module, "check_statement", lambda sql: None)
    table = f"t_{uuid.uuid4().hex[:12]}"
    replies = await converse(
        relay_module,
        dsn,
        [
            statement("select 1"),
            statement("commit and chain"),
            statement(f"create table {table} (x int)"),
            END,
        ],
    )
    assert replies[-1] == {"ended": "rolled back"}
    assert not committed(admin, table)
