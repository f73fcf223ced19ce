"""The queue's schema: created from an empty database, upgraded from the previous version."""

from __future__ import annotations

import psycopg

from gristmill.queue import MIGRATIONS, Queue, current_version, migrate


def test_an_empty_database_is_migrated_to_the_latest_version(database: str) -> None:
    assert migrate(database) == [m.version for m in MIGRATIONS]
    assert migrate(database) == []
    with psycopg.connect(database) as conn:
        assert current_version(conn) == MIGRATIONS[-1].version


def test_jobs_queued_under_the_previous_version_survive_the_upgrade(database: str) -> None:
    assert migrate(database, target=1) == [1]
    with psycopg.connect(database, autocommit=True) as conn:
        assert current_version(conn) == 1
        row = conn.execute(
            "select gristmill.enqueue('python', 'def main(): return 1', priority => 3)"
        ).fetchone()
    assert row is not None
    assert migrate(database) == [2, 3, 4, 5, 6]
    with Queue(database) as queue:
        job = queue.get(row[0])
        assert job is not None
        assert (job.state, job.priority, job.cancel_requested) == ("queued", 3, False)
        assert queue.cancel(job.id) == "cancelled"


def test_a_database_without_the_schema_is_version_0(database: str) -> None:
    with psycopg.connect(database) as conn:
        assert current_version(conn) == 0


def test_jobs_in_every_state_survive_the_fair_claims_upgrade(database: str) -> None:
    assert migrate(database, target=2) == [1, 2]
    states = ("queued", "running", "done", "failed", "cancelled")
    with psycopg.connect(database, autocommit=True) as conn:
        for state in states:
            conn.execute(
                "insert into gristmill.jobs (id, language, code, tenant, state)"
                " values (%s, 'python', 'pass', 't', %s)",
                (f"job-{state}", state),
            )
        assert migrate(database) == [3, 4, 5, 6]
        rows = conn.execute("select id, state from gristmill.jobs order by id").fetchall()
        assert sorted(rows) == sorted((f"job-{state}", state) for state in states)
        # The queued one is claimed by the new claim; the running one counts as running.
        claimed = conn.execute("select id from gristmill.claim('w', 5, 30)").fetchall()
        assert claimed == [("job-queued",)]
