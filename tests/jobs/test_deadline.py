"""The caller's deadline bounds the job's wall time at the moment its sandbox starts."""

from __future__ import annotations

import time

from gristmill.config import DEFAULT_LIMITS
from gristmill.jobs.executor import DEADLINE_MARGIN, DEADLINE_MARGIN_MIN_S, within_deadline
from gristmill.model import Job


def job(deadline: float | None) -> Job:
    return Job("j", "python", "", "main", {}, DEFAULT_LIMITS, deadline=deadline)


def test_no_deadline_leaves_the_limit():
    assert within_deadline(job(None)).limits == DEFAULT_LIMITS


def test_a_later_deadline_leaves_the_limit():
    far = time.monotonic() + 3600
    assert within_deadline(job(far)).limits.wall_time_ms == DEFAULT_LIMITS.wall_time_ms


def test_a_near_deadline_cuts_the_wall_time_keeping_a_margin_to_deliver():
    cut = within_deadline(job(time.monotonic() + 4)).limits.wall_time_ms
    assert 3000 < cut <= 4000 * (1 - DEADLINE_MARGIN)


def test_a_short_deadline_still_keeps_the_least_margin():
    cut = within_deadline(job(time.monotonic() + 1)).limits.wall_time_ms
    assert 0 < cut <= 1000 - DEADLINE_MARGIN_MIN_S * 1000


def test_a_passed_deadline_leaves_one_millisecond_not_zero():
    assert within_deadline(job(time.monotonic() - 1)).limits.wall_time_ms == 1
