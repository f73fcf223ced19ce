"""Admission: a fixed number of running jobs, a bounded FIFO wait, refusal past it."""

from __future__ import annotations

import asyncio

import pytest

from gristmill.errors import Overloaded
from gristmill.server.admission import Admission, Ticket


async def test_jobs_beyond_slots_and_queue_are_refused_at_once():
    admission = Admission(max_running=1, max_queued=1)
    admission.admit()
    admission.admit()
    with pytest.raises(Overloaded):
        admission.admit()


async def test_waiting_jobs_get_the_freed_slot_in_order():
    admission = Admission(max_running=1, max_queued=2)
    running = admission.admit()
    first, second = admission.admit(), admission.admit()
    never = asyncio.Event()
    order: list[str] = []

    async def wait(name: str, ticket: Ticket) -> None:
        assert await ticket.wait_turn(never)
        order.append(name)
        ticket.release()

    waiting = [
        asyncio.create_task(wait("second", second)),
        asyncio.create_task(wait("first", first)),
    ]
    await asyncio.sleep(0)
    assert order == []
    running.release()
    await asyncio.gather(*waiting)
    assert order == ["first", "second"]
    assert admission.running == 0


async def test_cancelled_waiter_gives_up_its_place():
    admission = Admission(max_running=1, max_queued=1)
    running = admission.admit()
    queued = admission.admit()
    cancel = asyncio.Event()
    cancel.set()
    assert await queued.wait_turn(cancel) is False
    assert admission.queued == 0
    admission.admit().release()  # the freed queue place is usable again
    running.release()
    assert admission.running == 0


async def test_release_is_idempotent():
    admission = Admission(max_running=2, max_queued=0)
    ticket = admission.admit()
    ticket.release()
    ticket.release()
    assert admission.running == 0
