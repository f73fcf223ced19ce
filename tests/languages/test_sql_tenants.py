"""Tenants sharing one PostgreSQL database through the relay: each connects as a role of
its own, which neither sees nor cancels another's statements nor gets another's pooled
connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from gristmill.config import DatabaseConfig

from .test_sql_postgres import postgres  # noqa: F401 (the cluster's fixture)
from .test_sql_relay import END, admin, dsn, relay_module, statement, talk  # noqa: F401

TENANT_ROLES = ("job_alice", "job_bob", "job_carol")


@pytest.fixture
async def per_tenant(relay_module, dsn, admin) -> AsyncIterator[Any]:  # noqa: F811
    """A relay whose tenants each connect as `job_<tenant>` (roles made here)."""
    for role in TENANT_ROLES:
        if not admin.execute("select 1 from pg_roles where rolname = %s", [role]).fetchone():
            admin.execute(f"create role {role} login")
    relay = relay_module.Relay("main", DatabaseConfig(dsn=dsn, role="job_{tenant}", pool_size=2))
    yield relay
    for connection in relay._idle:
        await connection.close()


async def _wait_running(admin: psycopg.Connection[Any], marker: str) -> None:  # noqa: F811
    """Until the statement holding `marker` runs (bounded: the test fails, never hangs)."""
    for _ in range(200):
        found = admin.execute(
            "select count(*) from pg_stat_activity where state = 'active' and query like %s"
            " and pid <> pg_backend_pid()",
            [f"%{marker}%"],
        ).fetchone()
        if found and found[0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the statement {marker} never ran")


@pytest.mark.attack("sql: tenants sharing a database")
async def test_a_tenant_neither_sees_nor_cancels_anothers_statement(per_tenant, admin):  # noqa: F811
    """pg_stat_activity hides another role's query text from a non-member, and
    pg_cancel_backend needs the same role: with a role per tenant both hold across
    tenants, and both still work within one."""
    marker = f"secret-{uuid.uuid4().hex}"
    sleeping = asyncio.ensure_future(
        talk(per_tenant, [statement(f"select pg_sleep(60), '{marker}' as s"), END], tenant="alice")
    )
    await _wait_running(admin, marker)
    look = statement(
        "select usename, query from pg_stat_activity"
        f" where usename = 'job_alice' and query like '%{marker[:8]}%' and state = 'active'"
        " and pid <> pg_backend_pid()"
    )
    cancel = statement(
        # (Another role's state is hidden too: the pids are the role's backends.)
        "select bool_and(pg_cancel_backend(pid)) as cancelled from pg_stat_activity"
        " where usename = 'job_alice' and pid <> pg_backend_pid()"
    )
    bob = await talk(per_tenant, [look, END], tenant="bob")
    assert not [r for r in bob if "rows" in r], bob  # its text is not shown: nothing matches
    hidden = await talk(
        per_tenant,
        [
            statement(
                "select query from pg_stat_activity where usename = 'job_alice'"
                " and pid <> pg_backend_pid()"
            ),
            cancel,
            END,
        ],
        tenant="bob",
    )
    shown = [row["query"] for r in hidden for row in r.get("rows", [])]
    assert shown and set(shown) == {"<insufficient privilege>"}, hidden
    assert "error" in hidden[-1], hidden
    assert hidden[-1]["error"]["sqlstate"] == "42501"  # must be a member of the role
    assert not sleeping.done()
    same = await talk(per_tenant, [look, cancel, END], tenant="alice")
    assert any(marker in row["query"] for r in same for row in r.get("rows", [])), same
    assert {"rows": [{"cancelled": True}]} in same
    cancelled = await sleeping
    assert cancelled[-1]["error"]["sqlstate"] == "57014"  # alice's own cancel reached it


@pytest.mark.attack("sql: tenants sharing a database")
async def test_a_pooled_connection_never_serves_another_tenant(per_tenant):
    who = statement("select current_user as role, session_user as login, pg_backend_pid() as pid")

    async def run(tenant: str) -> dict[str, Any]:
        replies = await talk(per_tenant, [who, END], tenant=tenant)
        return next(r["rows"][0] for r in replies if "rows" in r)

    alice = await run("alice")
    bob = await run("bob")
    assert (alice["role"], alice["login"]) == ("job_alice", "job_alice")
    assert (bob["role"], bob["login"]) == ("job_bob", "job_bob")
    assert (await run("alice"))["pid"] == alice["pid"]  # alice's connection, kept for her
    carol = await run("carol")  # a third role in a pool of two: the oldest idle one goes
    assert carol["role"] == "job_carol" and carol["pid"] not in {alice["pid"], bob["pid"]}
    assert len(per_tenant._idle) <= 2
    for tenant in ("alice", "bob", "carol", "alice"):
        assert (await run(tenant))["role"] == f"job_{tenant}"
    assert len(per_tenant._idle) <= 2
    assert sorted(c.info.user for c in per_tenant._idle) == sorted(
        set(c.info.user for c in per_tenant._idle)
    )


@pytest.mark.attack("sql: tenants sharing a database")
async def test_a_tenant_without_a_role_of_its_own_is_refused(per_tenant):
    replies = await talk(per_tenant, [statement("select 1"), END], tenant="x" * 64)
    assert replies[-1]["error"]["name"] == "DatabaseUnavailable"
    assert "has no role of its own" in replies[-1]["error"]["message"]
    assert not per_tenant._idle
