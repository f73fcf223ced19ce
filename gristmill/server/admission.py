"""How many jobs run at once, how many may wait, and refusing at once past that.

A full server answers RESOURCE_EXHAUSTED immediately rather than letting requests pile
up: the queue worker in front of it has its own queue and can retry elsewhere. Waiting
jobs get slots in the order they came (first in, first out).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from gristmill.errors import Overloaded

__all__ = ["Admission", "Ticket"]


class Admission:
    """`max_running` slots and at most `max_queued` jobs waiting for one."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def admit(self) -> Ticket:
        """A place for one job, running or waiting; raises `Overloaded` when there is none."""
        if self.running < self.max_running:
            self.running += 1
            return Ticket(self, turn=None)
        if len(self._waiting) >= self.max_queued:
            raise Overloaded(
                f"{self.running} jobs running and {len(self._waiting)} waiting: the server is full"
            )
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        return Ticket(self, turn=turn)

    def _hand_on(self) -> None:
        """A slot was freed: give it to the oldest waiting job, else count it free."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1


class Ticket:
    """One job's place. Call `release` exactly when the job's run is over (it is idempotent)."""

    def __init__(self, admission: Admission, turn: asyncio.Future[None] | None) -> None:
        self._admission = admission
        self._turn = turn
        self._admitted_at = time.monotonic()
        self._released = False
        self.queued_ms = 0

    @property
    def _holds_slot(self) -> bool:
        return self._turn is None or (self._turn.done() and not self._turn.cancelled())

    async def wait_turn(self, cancel: asyncio.Event) -> bool:
        """Waits for a slot; False when `cancel` was set first and the place was given up."""
        if self._turn is not None and not self._turn.done():
            cancelled = asyncio.ensure_future(cancel.wait())
            either: set[asyncio.Future[Any]] = {self._turn, cancelled}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cancelled.cancel()
            if not self._turn.done():
                self.release()
                return False
        self.queued_ms = int((time.monotonic() - self._admitted_at) * 1000)
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._holds_slot:
            self._admission._hand_on()
        else:
            assert self._turn is not None
            self._turn.cancel()
            self._admission._waiting.remove(self._turn)
