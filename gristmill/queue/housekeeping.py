"""What some worker does now and then besides jobs: the history's partitions created
ahead and dropped past the retention (`gristmill.maintain`), and the live tables
vacuumed sooner than autovacuum would. On a connection of its own, so that claims never
wait behind it."""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg

from gristmill.queue.database import Database
from gristmill.queue.settings import WorkerConfig

__all__ = ["housekeeping"]

log = logging.getLogger(__name__)


async def housekeeping(db: Database, config: WorkerConfig) -> None:
    """Runs until cancelled: `maintain` every `maintain_s`, the vacuum check every `vacuum_s`."""
    next_maintain = 0.0
    while True:
        try:
            if time.monotonic() >= next_maintain:
                await _maintain(db, config.retention_s)
                next_maintain = time.monotonic() + config.maintain_s
            await _vacuum(db, config.vacuum_dead_tuples)
        except psycopg.Error:
            log.exception("maintenance failed")
        await asyncio.sleep(min(config.maintain_s, config.vacuum_s))


async def _maintain(db: Database, retention_s: float) -> None:
    """Creates the history's partitions ahead and drops those past the retention."""
    rows = await db.fetch(
        "select created, dropped from gristmill.maintain(%s * interval '1 second')",
        (retention_s,),
    )
    for created, dropped in rows:
        if created or dropped:
            log.info("history partitions created %s, dropped %s", created, dropped)


async def _vacuum(db: Database, dead_tuples: int) -> None:
    """Vacuums the live queue once it holds `dead_tuples` dead rows: every job leaves two
    there, faster than autovacuum comes round (once a minute), and the claim's index
    walks would step over them (`skip_locked`: one worker at it)."""
    rows = await db.fetch(
        "select coalesce(sum(n_dead_tup), 0) from pg_stat_user_tables"
        " where relid in ('gristmill.queue'::regclass, 'gristmill.payloads'::regclass)"
    )
    if rows and rows[0][0] >= dead_tuples:
        await db.fetch("vacuum (skip_locked) gristmill.queue, gristmill.payloads")
