"""The statements on the leases a worker holds, each fenced by the claim's token: a
lease extended, a job given back (no attempt used), retried later, and the expired
leases of lost workers reaped."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from gristmill.queue.database import Database
from gristmill.queue.records import JobRecord

__all__ = ["extend", "give_back", "reap", "retry"]


async def extend(db: Database, jobs: Sequence[JobRecord], lease_s: float) -> dict[UUID, bool]:
    """Extends the leases still held by these claims: of each kept, whether its cancel
    was asked for; those missing passed to another claim."""
    rows = await db.fetch(
        """
        update gristmill.queue j
           set lease_expires_at = now() + make_interval(secs => %(lease)s)
          from unnest(%(uids)s::uuid[], %(tokens)s::bigint[]) as h(uid, token)
         where j.uid = h.uid and j.lease_token = h.token and j.state = 'running'
        returning j.uid, j.cancel_requested
        """,
        {
            "lease": lease_s,
            "uids": [job.uid for job in jobs],
            "tokens": [job.lease_token for job in jobs],
        },
    )
    return {uid: bool(cancel) for uid, cancel in rows}


async def give_back(db: Database, jobs: Sequence[JobRecord], reason: str | None = None) -> int:
    """Puts claimed jobs back in the queue without using up an attempt, waking the
    workers; how many were still this worker's to give."""
    rows = await db.fetch(
        """
        with back as (
            update gristmill.queue j
               set state = 'queued', attempts = j.attempts - 1, run_after = now(),
                   lease_expires_at = null, last_error = coalesce(%(reason)s, j.last_error)
              from unnest(%(uids)s::uuid[], %(tokens)s::bigint[]) as h(uid, token)
             where j.uid = h.uid and j.lease_token = h.token and j.state = 'running'
            returning j.uid
        )
        select count(*), pg_notify('gristmill_jobs', '') from back
        """,
        {
            "uids": [job.uid for job in jobs],
            "tokens": [job.lease_token for job in jobs],
            "reason": reason,
        },
    )
    return int(rows[0][0]) if rows else 0


async def retry(
    db: Database, job: JobRecord, message: str, backoff_s: float, free: bool
) -> str | None:
    """Back to the queue `backoff_s` later (`free`: no attempt used), or failed once its
    attempts are used up: the job's state after, None when the lease had passed."""
    rows = await db.fetch(
        "select gristmill.retry(%s, %s, %s, %s, %s)",
        (job.uid, job.lease_token, message, backoff_s, free),
    )
    return None if not rows or rows[0][0] is None else str(rows[0][0])


async def reap(db: Database, backoff_initial_s: float, backoff_max_s: float) -> int:
    """Puts back the jobs of lost workers (their lease expired); how many."""
    rows = await db.fetch("select gristmill.reap(%s, %s)", (backoff_initial_s, backoff_max_s))
    return int(rows[0][0]) if rows and rows[0][0] else 0
