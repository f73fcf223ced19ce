"""Outcomes written back in batches: the jobs that end while one write-back runs go in
the next, one statement (`gristmill.finish`) for all, each fenced by its lease token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from gristmill.queue.database import Database
from gristmill.queue.records import JobRecord

__all__ = ["WriteBack"]

_OUTCOME_FIELDS = (
    ("state", "text"),
    ("verdict", "text"),
    ("result", "text"),
    ("error", "text"),
    ("stdout", "text"),
    ("stderr", "text"),
    ("exit_code", "integer"),
    ("usage", "text"),
    ("outcome_lockfile", "text"),
    ("detail", "text"),
    ("last_error", "text"),
)

_FINISH = (
    "select gristmill.finish(%s::uuid[], %s::bigint[], "
    + ", ".join(f"%s::{kind}[]" for _, kind in _OUTCOME_FIELDS)
    + ")"
)

_Pending = tuple[JobRecord, dict[str, Any], "asyncio.Future[bool]"]


class WriteBack:
    """The batches of outcomes, on a connection of their own (they do not wait behind
    claims); `batch_s` waits that much more before each to gather more."""

    def __init__(self, db: Database, batch_s: float, written: Callable[[], None]) -> None:
        """`written` is called after each statement that wrote a batch."""
        self.db = db
        self._written = written
        self._batch_s = batch_s
        self._outbox: list[_Pending] = []
        self._ready = asyncio.Event()

    async def finish(self, job: JobRecord, columns: dict[str, Any]) -> bool:
        """Moves the job to the history with these outcome columns, in the next batch;
        whether its lease (its token) still held."""
        ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outbox.append((job, columns, ended))
        self._ready.set()
        return await ended

    async def run(self) -> None:
        """Writes the outcomes waiting, a statement at a time, until cancelled."""
        while True:
            await self._ready.wait()
            await asyncio.sleep(self._batch_s)  # at 0: lets the same instant's join
            self._ready.clear()
            batch, self._outbox = self._outbox, []
            try:
                moved = await self.db.fetch(_FINISH, _finish_arrays(batch))
            except Exception as error:
                for _, _, ended in batch:
                    ended.set_exception(error)
                continue
            self._written()
            kept = {row[0] for row in moved}
            for job, _, ended in batch:
                ended.set_result(job.uid in kept)


def _finish_arrays(batch: Sequence[_Pending]) -> list[list[Any]]:
    """`gristmill.finish`'s arguments for a batch: one array per column."""
    return [
        [job.uid for job, _, _ in batch],
        [job.lease_token for job, _, _ in batch],
        *([columns.get(name) for _, columns, _ in batch] for name, _ in _OUTCOME_FIELDS),
    ]
