"""The job table's rules about a run its caller's deadline cut short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gristmill.isolation.backend import SandboxInfo
from gristmill.model import Job, JobEvent, Limits, Outcome, Usage, Verdict
from gristmill.server.admission import Admission
from gristmill.server.jobs import JobTable


class CutShortRunner:
    """Times out every job as the executor does: at the caller's deadline if it is sooner."""

    def __init__(self) -> None:
        self.runs = 0

    def sandbox_info(self) -> SandboxInfo:
        return SandboxInfo(backend="fake", enforced_limits=(), detail="")

    async def run(
        self,
        job: Job,
        on_event: Callable[[JobEvent], None] | None = None,
        cancel: asyncio.Event | None = None,
    ) -> Outcome:
        self.runs += 1
        wall_ms = job.limits.wall_time_ms
        if job.deadline is not None:
            wall_ms = min(wall_ms, int((job.deadline - time.monotonic()) * 1000))
        return Outcome(
            job_id=job.id,
            verdict=Verdict.TIMEOUT,
            detail="the wall-time limit ran out",
            usage=Usage(wall_time_ms=wall_ms),
        )


def _job(deadline_s: float | None) -> Job:
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    limits = Limits(30_000, 64 << 20, 30_000, 8, 1 << 20)
    return Job("cut", "fake", "x", "main", {}, limits, deadline=deadline)


async def _outcome(table: JobTable, job: Job) -> Outcome:
    async with table.submit(job) as subscription:
        return await subscription.outcome()


async def test_a_run_cut_by_the_callers_deadline_says_so_and_is_not_kept_for_a_retry():
    runner = CutShortRunner()
    table = JobTable(runner, Admission(2, 2), ttl_s=600, max_bytes=1 << 20)
    first = await _outcome(table, _job(deadline_s=1))
    assert first.verdict is Verdict.TIMEOUT
    assert "caller's deadline" in first.detail
    # The retry brings more time: it runs again rather than getting the TIMEOUT back.
    again = await _outcome(table, _job(deadline_s=None))
    assert runner.runs == 2
    assert again.detail == "the wall-time limit ran out"


async def test_a_timeout_at_the_jobs_own_limit_is_kept_under_its_id():
    runner = CutShortRunner()
    table = JobTable(runner, Admission(2, 2), ttl_s=600, max_bytes=1 << 20)
    await _outcome(table, _job(deadline_s=None))
    kept = await _outcome(table, _job(deadline_s=None))
    assert runner.runs == 1
    assert kept.detail == "the wall-time limit ran out"


async def test_outcomes_past_the_byte_budget_are_forgotten_oldest_first():
    runner = CutShortRunner()
    table = JobTable(runner, Admission(2, 2), ttl_s=600, max_bytes=1)
    await _outcome(table, _job(deadline_s=None))
    await _outcome(table, _job(deadline_s=None))
    assert runner.runs == 2  # the first outcome did not fit the budget: the retry ran
