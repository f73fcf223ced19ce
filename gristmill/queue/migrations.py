"""The queue's schema in PostgreSQL, as versioned migrations applied in order.

Everything lives in the `gristmill` schema. Each migration is one SQL file of
`gristmill/queue/schema/` (package data), `NNNN_name.sql`, whose leading comment says
what it does; they are applied in the order of their numbers.
`gristmill.schema_migrations` records the versions applied; `migrate` applies the missing
ones, each in a transaction of its own under an advisory lock, so that several workers
starting at once migrate once. A migration is never edited once released: a change is
a new file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import psycopg

__all__ = ["MIGRATIONS", "Migration", "current_version", "migrate"]

# Any fixed number: the advisory lock that serialises migrations across processes.
_LOCK_KEY = 0x67726973  # "gris"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _load() -> tuple[Migration, ...]:
    """The migrations of the package's `schema/` folder, by version."""
    found = []
    for entry in resources.files("gristmill.queue").joinpath("schema").iterdir():
        number, _, stem = entry.name.removesuffix(".sql").partition("_")
        if entry.name.endswith(".sql") and number.isdigit():
            found.append(Migration(int(number), stem.replace("_", " "), entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the queue's migrations are not numbered 1..n: {found}")
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = _load()

_BOOKKEEPING = """
create schema if not exists gristmill;
create table if not exists gristmill.schema_migrations (
    version integer primary key,
    name text not null,
    applied_at timestamptz not null default now()
)
"""


def current_version(conn: psycopg.Connection[object]) -> int:
    """The newest migration applied to the database (0 when none)."""
    exists = conn.execute("select to_regclass('gristmill.schema_migrations')").fetchone()
    if exists is None or exists[0] is None:  # type: ignore[index]
        return 0
    row = conn.execute("select coalesce(max(version), 0) from gristmill.schema_migrations")
    found = row.fetchone()
    return int(found[0]) if found else 0  # type: ignore[index]


def migrate(conninfo: str, target: int | None = None) -> list[int]:
    """Applies the migrations missing up to `target` (default: all); returns those applied."""
    applied: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for migration in MIGRATIONS:
            if target is not None and migration.version > target:
                break
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(_BOOKKEEPING)
                done = conn.execute(
                    "select 1 from gristmill.schema_migrations where version = %s",
                    (migration.version,),
                ).fetchone()
                if done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "insert into gristmill.schema_migrations (version, name) values (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
    return applied
