"""How many jobs run at once, how many may wait, and refusing at once past that.

A full server answers RESOURCE_EXHAUSTED immediately rather than letting requests pile
up: the queue worker in front of it has its own queue and can retry elsewhere. Waiting
jobs get slots in the order they came (first in, first out), except that a job whose
tenant already runs its `Quota` of jobs lets the next one pass: one tenant cannot take
every slot, nor every queue place.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any

from gristmill.errors import Overloaded

__all__ = ["Admission", "Quota", "Ticket"]


@dataclass(frozen=True)
class Quota:
    """One tenant's share: at most `max_running` of its jobs run and `max_queued` wait."""

    tenant: str
    max_running: int
    max_queued: int


_UNLIMITED = Quota("", 2**62, 2**62)
"""The quota of a job admitted on no tenant's behalf."""


@dataclass(eq=False)
class _Place:
    turn: asyncio.Future[None]
    quota: Quota


class Admission:
    """`max_running` slots and at most `max_queued` jobs waiting for one, in all."""

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        self._waiting: collections.deque[_Place] = collections.deque()
        self._running_of: collections.Counter[str] = collections.Counter()
        self._queued_of: collections.Counter[str] = collections.Counter()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def running_of(self, tenant: str) -> int:
        return self._running_of[tenant]

    def queued_of(self, tenant: str) -> int:
        return self._queued_of[tenant]

    def admit(self, quota: Quota | None = None) -> Ticket:
        """A place for one job of `quota`'s tenant (None: no tenant's), running or
        waiting; raises `Overloaded` when there is none, naming the tenant when its own
        quota is what is full."""
        quota = quota or _UNLIMITED
        tenant = quota.tenant
        if self._may_start(quota):
            self._start(quota)
            return Ticket(self, quota, place=None)
        if len(self._waiting) >= self.max_queued:
            raise Overloaded(
                f"{self.running} jobs running and {len(self._waiting)} waiting: the server is full"
            )
        if self._queued_of[tenant] >= quota.max_queued:
            raise Overloaded(
                f"tenant {tenant!r}: {self._running_of[tenant]} jobs running and "
                f"{self._queued_of[tenant]} waiting: its quota is full",
                subject=f"tenant:{tenant}",
            )
        place = _Place(asyncio.get_running_loop().create_future(), quota)
        self._waiting.append(place)
        self._queued_of[tenant] += 1
        return Ticket(self, quota, place=place)

    def _may_start(self, quota: Quota) -> bool:
        return (
            self.running < self.max_running and self._running_of[quota.tenant] < quota.max_running
        )

    def _start(self, quota: Quota) -> None:
        self.running += 1
        self._running_of[quota.tenant] += 1

    def _unqueue(self, place: _Place) -> None:
        self._waiting.remove(place)
        self._queued_of[place.quota.tenant] -= 1

    def _hand_on(self, quota: Quota) -> None:
        """A slot of `quota`'s tenant was freed: give slots to the oldest waiting jobs
        that may start now."""
        self.running -= 1
        self._running_of[quota.tenant] -= 1
        for place in list(self._waiting):
            if self.running >= self.max_running:
                return
            if place.turn.done():  # given up; its ticket removes it
                continue
            if self._may_start(place.quota):
                self._unqueue(place)
                self._start(place.quota)
                place.turn.set_result(None)


class Ticket:
    """One job's place. Call `release` exactly when the job's run is over (it is idempotent)."""

    def __init__(self, admission: Admission, quota: Quota, place: _Place | None) -> None:
        self._admission = admission
        self._quota = quota
        self._place = place
        self._admitted_at = time.monotonic()
        self._released = False
        self.queued_ms = 0

    @property
    def waiting(self) -> bool:
        """Whether the job still waits for a slot."""
        return self._place is not None and not self._place.turn.done()

    @property
    def _holds_slot(self) -> bool:
        turn = self._place.turn if self._place is not None else None
        return turn is None or (turn.done() and not turn.cancelled())

    async def wait_turn(self, cancel: asyncio.Event) -> bool:
        """Waits for a slot; False when `cancel` was set first and the place was given up."""
        if self._place is not None and not self._place.turn.done():
            turn = self._place.turn
            cancelled = asyncio.ensure_future(cancel.wait())
            either: set[asyncio.Future[Any]] = {turn, cancelled}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cancelled.cancel()
            if not turn.done():
                self.release()
                return False
        self.queued_ms = int((time.monotonic() - self._admitted_at) * 1000)
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._holds_slot:
            self._admission._hand_on(self._quota)
        else:
            assert self._place is not None
            self._place.turn.cancel()
            self._admission._unqueue(self._place)
