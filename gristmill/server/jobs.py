"""The table of jobs in flight and recently finished, keyed by tenant and job id.

The job id is the idempotency key, within its tenant (another tenant's same id is
another job): a request repeating an id while the job runs joins
that run (it never runs twice), and one arriving after it finished gets the same
outcome until `ttl_s` has passed, or until the outcomes kept pass `max_bytes` (the
oldest go first). A job lives as long as someone waits for it: when
its last waiting client goes away, it is cancelled and forgotten, so that the worker's
retry (after a dropped connection, say) runs it again, once the abandoned run is gone.
A job cancelled by `Cancel` keeps its CANCELLED outcome like any other. A run cut
short by its caller's deadline (before the job's own wall-time limit) says so, and is
not kept: a retry bringing more time runs the job again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from gristmill.errors import InvalidRequest, ShuttingDown
from gristmill.isolation.backend import SandboxInfo
from gristmill.model import Job, JobEvent, Outcome, Verdict
from gristmill.observability.jobs import JobWatch
from gristmill.server.admission import Admission, Quota, Ticket

__all__ = ["JobRunner", "JobState", "JobTable", "Subscription"]

log = logging.getLogger(__name__)


class JobRunner(Protocol):
    """What the table needs of `gristmill.jobs.executor.Executor`."""

    def sandbox_info(self) -> SandboxInfo: ...

    async def run(
        self,
        job: Job,
        on_event: Callable[[JobEvent], None] | None = None,
        cancel: asyncio.Event | None = None,
    ) -> Outcome: ...


_END = object()
"""Put on a listener's queue after the job's last event."""


class JobState(enum.Enum):
    """Where a job is, as `JobTable.state` sees it."""

    UNKNOWN = "unknown"  # never seen, or forgotten (expired, abandoned, failed)
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


def _key(job: Job) -> tuple[str, str]:
    return job.tenant, job.id


@dataclass(eq=False)
class _Entry:
    job: Job
    ticket: Ticket | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    history: list[JobEvent] = field(default_factory=list)
    listeners: set[asyncio.Queue[object]] = field(default_factory=set)
    waiters: int = 0
    task: asyncio.Task[Outcome] | None = None
    # Every waiting client went away before the end: the run is being killed.
    abandoned: bool = False
    # The caller's deadline, not the job's wall-time limit, ended the run.
    cut_short: bool = False
    # Logs, metrics and traces of the job (`gristmill.observability`).
    watch: JobWatch = field(default_factory=JobWatch)

    def publish(self, event: JobEvent) -> None:
        self.watch.event(event)
        self.history.append(event)
        for queue in self.listeners:
            queue.put_nowait(event)

    def finished(self) -> bool:
        assert self.task is not None
        return self.task.done()


class Subscription:
    """One client's interest in a job, held with `async with`; leaving it may cancel the job."""

    def __init__(self, table: JobTable, entry: _Entry, deduplicated: bool) -> None:
        self._table = table
        self._entry = entry
        # True when this request joined a job already in flight or finished.
        self.deduplicated = deduplicated

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._table._leave(self._entry)

    async def outcome(self) -> Outcome:
        """The job's outcome; this caller going away does not cancel the run for others."""
        assert self._entry.task is not None
        return await asyncio.shield(self._entry.task)

    async def events(self) -> AsyncIterator[JobEvent]:
        """Every event of the job: those already past, then live ones until it ends."""
        queue: asyncio.Queue[object] = asyncio.Queue()
        for event in self._entry.history:
            queue.put_nowait(event)
        if self._entry.finished():
            queue.put_nowait(_END)
        self._entry.listeners.add(queue)
        try:
            while (item := await queue.get()) is not _END:
                yield item  # type: ignore[misc]
        finally:
            self._entry.listeners.discard(queue)


def _footprint(job: Job, outcome: Outcome) -> int:
    """About how many bytes a kept entry holds: its job's request and its outcome, and
    about a kilobyte of its own."""
    error = outcome.error
    error_bytes = len(error.message) + 100 * len(error.stack) if error is not None else 0
    return (
        1024
        + job.size_bytes
        + len(outcome.result_json)
        + len(outcome.stdout.data)
        + len(outcome.stderr.data)
        + error_bytes
    )


def _cut_by_deadline(job: Job, outcome: Outcome) -> bool:
    """Whether a TIMEOUT came from the caller's deadline (`executor.within_deadline`
    cut the wall limit to it) rather than from the job's own limit, which it would
    have run for in full."""
    return (
        outcome.verdict is Verdict.TIMEOUT
        and job.deadline is not None
        and outcome.usage.wall_time_ms < job.limits.wall_time_ms
    )


class JobTable:
    def __init__(
        self,
        runner: JobRunner,
        admission: Admission,
        ttl_s: float,
        max_bytes: int,
        watch: Callable[[Job], JobWatch] = lambda _job: JobWatch(),
    ) -> None:
        self._runner = runner
        self._watch = watch
        self._admission = admission
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._entries: dict[tuple[str, str], _Entry] = {}
        # Finished entries kept for retries, oldest first, with their footprints.
        self._kept: dict[_Entry, int] = {}
        self._kept_bytes = 0
        self._draining = False

    def submit(self, job: Job, quota: Quota | None = None) -> Subscription:
        """Joins the job with `job.id` (of `job.tenant`) or starts `job` within `quota`;
        raises `Overloaded` when full, `ShuttingDown` while draining."""
        entry = self._entries.get(_key(job))
        if entry is not None and not entry.abandoned:
            if dataclasses.replace(entry.job, deadline=None) != dataclasses.replace(
                job, deadline=None
            ):
                raise InvalidRequest("job.id", f"{job.id!r} is in use by a different job")
            entry.waiters += 1
            return Subscription(self, entry, deduplicated=True)
        if self._draining:
            raise ShuttingDown("the server is shutting down: it takes no new job")
        previous = entry.task if entry is not None else None
        ticket = self._admission.admit(quota)
        entry = _Entry(job=job, ticket=ticket, waiters=1, watch=self._watch(job))
        entry.task = asyncio.create_task(self._run(entry, ticket, previous), name=f"job {job.id}")
        entry.task.add_done_callback(lambda _: ticket.release())
        entry.task.add_done_callback(lambda task: self._finish(entry, task))
        self._entries[_key(job)] = entry
        return Subscription(self, entry, deduplicated=False)

    def watch(self, tenant: str, job_id: str) -> Subscription | None:
        """A subscription to `tenant`'s job `job_id` while it is in flight or kept (it
        keeps an in-flight job from being abandoned), or None when there is none."""
        entry = self._entries.get((tenant, job_id))
        if entry is None or entry.abandoned:
            return None
        entry.waiters += 1
        return Subscription(self, entry, deduplicated=True)

    def state(self, tenant: str, job_id: str) -> tuple[JobState, Outcome | None]:
        """Where `tenant`'s job `job_id` is, and its outcome once done."""
        entry = self._entries.get((tenant, job_id))
        if entry is None or entry.abandoned or entry.task is None:
            return JobState.UNKNOWN, None
        if entry.finished():
            if entry.task.cancelled() or entry.task.exception() is not None:
                return JobState.UNKNOWN, None
            return JobState.DONE, entry.task.result()
        if entry.ticket is not None and entry.ticket.waiting:
            return JobState.QUEUED, None
        return JobState.RUNNING, None

    async def cancel(self, job_id: str, tenant: str = "") -> bool:
        """Cancels a running job and returns once its run is over; False if none was running."""
        entry = self._entries.get((tenant, job_id))
        return entry is not None and await self._cancel(entry)

    async def _cancel(self, entry: _Entry) -> bool:
        if entry.finished():
            return False
        entry.cancel.set()
        assert entry.task is not None
        await asyncio.wait({entry.task})
        return True

    async def drain(self, grace_s: float, hurry: asyncio.Event | None = None) -> int:
        """Takes no new job from now on; waits up to `grace_s` (or until `hurry` is set)
        for the jobs in flight (queued ones too) to finish, then cancels the rest.
        Returns how many it cancelled."""
        self._draining = True
        in_flight = {e.task for e in self._entries.values() if e.task and not e.finished()}
        if in_flight and grace_s > 0:
            # Whichever comes first: every job done, the grace over, or a hurry.
            either: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(asyncio.wait(in_flight)),
                asyncio.ensure_future((hurry or asyncio.Event()).wait()),
            }
            try:
                await asyncio.wait(either, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in either:
                    waiter.cancel()
        left = [e for e in self._entries.values() if not e.finished()]
        await asyncio.gather(*(self._cancel(entry) for entry in left))
        return len(left)

    async def close(self) -> None:
        """Cancels every running job and waits until each run is over."""
        await self.drain(grace_s=0)

    async def _run(
        self, entry: _Entry, ticket: Ticket, previous: asyncio.Task[Outcome] | None
    ) -> Outcome:
        if previous is not None:
            # The abandoned run of this id must be gone first: never two at once.
            await asyncio.wait({previous})
        if not await ticket.wait_turn(entry.cancel):
            return Outcome(
                job_id=entry.job.id, verdict=Verdict.CANCELLED, detail="cancelled while queued"
            )
        entry.watch.admitted()
        outcome = await self._runner.run(entry.job, entry.publish, entry.cancel)
        if _cut_by_deadline(entry.job, outcome):
            entry.cut_short = True
            outcome = dataclasses.replace(
                outcome,
                detail=f"the caller's deadline ran out after {outcome.usage.wall_time_ms} ms, "
                f"before the job's wall-time limit of {entry.job.limits.wall_time_ms} ms",
            )
        phases = dataclasses.replace(outcome.usage.phases, queued_ms=ticket.queued_ms)
        return dataclasses.replace(outcome, usage=dataclasses.replace(outcome.usage, phases=phases))

    @property
    def admission(self) -> Admission:
        return self._admission

    @property
    def draining(self) -> bool:
        return self._draining

    def _finish(self, entry: _Entry, task: asyncio.Task[Outcome]) -> None:
        entry.watch.ended(task)
        for queue in entry.listeners:
            queue.put_nowait(_END)
        if entry.waiters == 0:
            # The outcome holds everything the events did; kept, they would only cost memory.
            entry.history.clear()
        if task.cancelled() or task.exception() is not None:
            # The service failed, not the job: forget it so that a retry can run it again.
            # Each waiting caller gets the exception; `exception()` also marks it as seen.
            log.debug("job %s ended without an outcome", entry.job.id)
            self._forget(entry)
            return
        if entry.abandoned or entry.cut_short:
            self._forget(entry)
            return
        asyncio.get_running_loop().call_later(self._ttl_s, self._forget, entry)
        self._keep(entry, _footprint(entry.job, task.result()))

    def _keep(self, entry: _Entry, size: int) -> None:
        self._kept[entry] = size
        self._kept_bytes += size
        while self._kept_bytes > self._max_bytes:
            self._forget(next(iter(self._kept)))

    def _forget(self, entry: _Entry) -> None:
        self._kept_bytes -= self._kept.pop(entry, 0)
        if self._entries.get(_key(entry.job)) is entry:
            del self._entries[_key(entry.job)]

    def _leave(self, entry: _Entry) -> None:
        entry.waiters -= 1
        if entry.waiters == 0 and entry.finished():
            entry.history.clear()
        if entry.waiters == 0 and not entry.finished():
            entry.abandoned = True
            entry.cancel.set()
