"""The worker's database connections: one statement at a time each, reconnecting until
PostgreSQL answers (a restart or a failover is waited out, not failed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

__all__ = ["Database"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Database:
    """One connection, one statement at a time, reconnecting until PostgreSQL answers."""

    def __init__(self, conninfo: str, gone: asyncio.Event) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        # Set when waiting for the database is no longer useful (the worker is leaving).
        self._gone = gone

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        pause = 0.1
        async with self._lock:
            while True:
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self._conninfo, autocommit=True, connect_timeout=5
                        )
                    return await work(self._conn)
                except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                    if self._gone.is_set():
                        raise
                    log.warning("database unavailable (%s); retrying in %.1f s", error, pause)
                    await self._close()
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)

    async def fetch(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchall() if cursor.description else []

        return await self.run(work)

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def close(self) -> None:
        async with self._lock:
            await self._close()
