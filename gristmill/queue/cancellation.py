"""Cancelling a running job from the queue, and listening for what the queue says:
new work (`gristmill_jobs`) and cancel requests (`gristmill_cancel`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import psycopg

from gristmill.client import AsyncClient
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["cancel_everywhere", "cancelled_outcome", "listen"]

log = logging.getLogger(__name__)


async def cancel_everywhere(
    job_id: str, clients: Sequence[AsyncClient], abandon: Callable[[], None]
) -> None:
    """Asks each server to cancel the job (it must reach the one running it); when none
    had it (not there yet, or a name we cannot enumerate), gives the call a moment to
    reach a server, then `abandon`s it, which kills the run."""
    answers = await asyncio.gather(
        *(client.cancel(job_id, timeout_s=10) for client in clients),
        return_exceptions=True,
    )
    if any(answer is True for answer in answers):
        log.info("job %s cancelled on its server", job_id)
        return  # its Execute answers with the CANCELLED outcome
    await asyncio.sleep(1.0)
    abandon()


def cancelled_outcome(job_id: str) -> pb.Outcome:
    return pb.Outcome(
        job_id=job_id,
        verdict=pb.CANCELLED,
        detail="cancelled from the queue before a server acknowledged it; its call abandoned",
    )


async def listen(
    conninfo: str,
    listening: Callable[[], None],
    work: Callable[[], None],
    cancel: Callable[[str], None],
) -> None:
    """Until cancelled: `work()` on `gristmill_jobs`, `cancel(id)` on `gristmill_cancel`,
    `listening()` each time it (re)starts listening (what was sent meanwhile is missed)."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=5
            ) as conn:
                await conn.execute("listen gristmill_jobs")
                await conn.execute("listen gristmill_cancel")
                listening()
                async for note in conn.notifies():
                    if note.channel == "gristmill_jobs":
                        work()
                    else:
                        cancel(note.payload)
        except psycopg.Error as error:
            log.info("listener lost the database (%s); polling until it is back", error)
        await asyncio.sleep(1.0)
