"""The queue worker: jobs from PostgreSQL to `Execute` and their outcomes back, none lost.

One worker runs up to `concurrency` jobs at once:

- **Claim**: `gristmill.claim` shares the slots fairly between tenants (see migration 3)
  and, with `FOR UPDATE SKIP LOCKED`, takes ready jobs no other worker is taking, marks
  them running under a lease (`lease_expires_at`) and gives each claim a new fencing
  token (`lease_token`, from a sequence). New work is noticed through LISTEN/NOTIFY
  (`gristmill_jobs`, once per enqueuing transaction; each worker wakes after a random
  pause of up to `wake_jitter_s`), with a poll every `poll_s` in case one was missed.
  Each claim first promotes the scheduled jobs that are due (`run_after` reached).
- **Prefetch**: a claim takes a few more than the free slots (`prefetch`), held under
  their lease (heartbeats extend it), so that a slot that frees starts one without a
  round trip to PostgreSQL. One held past `prefetch_hold_s` goes back to the queue (with
  a NOTIFY, and no more prefetch until a slot frees) for the workers with room; one whose
  lease may have passed (heartbeats missed) is dropped, never run.
- **Trace**: each attempt has a span (`queue.job`) in the job's trace, whose call span
  the server continues (see `gristmill.queue.tracing`).
- **Heartbeat**: every `heartbeat_s` the worker extends the leases it holds (those whose
  token still matches). A lease it no longer holds means another worker has the job: the
  call is abandoned and its outcome, if any, never written.
- **Reap**: every worker puts jobs whose lease expired (a worker lost) back in the queue
  with a backoff, or fails them once their attempts are used up.
- **Housekeeping**: partitions and vacuum (see `gristmill.queue.housekeeping`).
- **Execute** runs with the job's id as the server's idempotency key, so a job re-claimed
  after a lost lease joins the run already in flight on that server instead of a second one.
- **Write-back** of the outcome moves the job from the live queue to the history
  (`gristmill.finish`), only where its fencing token still matches: a worker that lost
  its lease cannot record anything, so each job gets exactly one outcome. Outcomes that
  end within `batch_s` of each other go in one statement.
- **Retries** (back to the queue with backoff) only for what is worth retrying: the
  server unreachable or failing (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED...),
  RESOURCE_EXHAUSTED (which also pauses claiming: backpressure; it does not use up an
  attempt), a lost worker. Any Outcome, whatever its verdict, is the job's answer; a
  request the server refuses (INVALID_ARGUMENT...) fails the job at once.
- **Cancellation**: `gristmill.cancel(id)` on a running job notifies `gristmill_cancel`
  (the heartbeat also sees `cancel_requested`); the worker calls `Cancel` on every server
  it knows, and abandons its call if none had the job.
- **Stop** (`stop` set, e.g. by SIGTERM): no new claims; running jobs get `grace_s` to
  finish; the rest are abandoned and released to the queue without using up an attempt.

PostgreSQL going away is waited out: every statement is retried on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass

import grpc
import psycopg
from opentelemetry import trace

from gristmill.client import AsyncClient
from gristmill.credentials import Credentials
from gristmill.queue import leases
from gristmill.queue.cancellation import cancel_everywhere, cancelled_outcome, listen
from gristmill.queue.database import Database
from gristmill.queue.housekeeping import housekeeping
from gristmill.queue.migrations import migrate
from gristmill.queue.records import JOB_COLUMNS, JobRecord, execute_arguments, outcome_columns
from gristmill.queue.routing import Routes, channel_target, parse_target
from gristmill.queue.settings import WorkerConfig, WorkerStats
from gristmill.queue.tracing import JobSpans
from gristmill.queue.writeback import WriteBack
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["Worker", "WorkerConfig", "WorkerStats", "channel_target", "parse_target"]

log = logging.getLogger(__name__)

# Failures of the service, worth another attempt later (maybe on another server).
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(eq=False)
class _Running:
    job: JobRecord
    spans: JobSpans
    # Until when (monotonic) the lease surely holds: from before the claim or heartbeat
    # that set it, so never later than the database's.
    lease_until: float
    held_since: float = 0.0
    task: asyncio.Task[None] | None = None
    call: asyncio.Future[pb.Outcome] | None = None
    cancel_requested: bool = False
    lease_lost: bool = False


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        client: AsyncClient | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """`client`: the client of every target instead of one each (a bench measures
        the queue alone with a target that answers at once). `tracer`: where the
        worker's spans go (None: none recorded; the job's trace still reaches the server)."""
        self.config = config
        self._given_client = client
        self._tracer = tracer or trace.NoOpTracer()
        self._routes = Routes()
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._leaving = asyncio.Event()
        self._wake = asyncio.Event()
        self._db = Database(config.conninfo, self._leaving)
        # Write-backs on a connection of their own: they do not wait behind claims; nor
        # do claims behind housekeeping (vacuum, partitions, routes).
        self._writer = WriteBack(
            Database(config.conninfo, self._leaving), config.batch_s, self._written
        )
        self._housekeeping_db = Database(config.conninfo, self._leaving)
        self._running: dict[str, _Running] = {}
        self._held: deque[_Running] = deque()  # prefetched, not started yet
        self._prefetch_paused = False  # one was handed back: none until a slot frees
        self._paused_until = 0.0
        self._cancelling: set[asyncio.Task[None]] = set()

    def _written(self) -> None:
        self.stats.write_backs += 1

    def stop(self) -> None:
        """Asks the worker to stop: no new claims, running jobs get the grace period."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Runs until `stop`; returns once every job is finished or released."""
        config = self.config
        if config.migrate:
            await self._migrate()
        self._routes.connect(
            config.targets, config.credentials or Credentials.from_env(), self._given_client
        )
        discovery = (self._housekeeping_db, config.worker_id, config.discover_s)
        await self._routes.discover(*discovery)
        helpers = [
            asyncio.create_task(self._routes.keep_discovering(*discovery), name="discovery"),
            asyncio.create_task(
                listen(config.conninfo, self._wake.set, self._wake_soon, self._cancel_requested),
                name="listen",
            ),
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._writer.run(), name="write-back"),
            asyncio.create_task(housekeeping(self._housekeeping_db, config), name="housekeeping"),
        ]
        log.info("worker %s: serving %s", config.worker_id, ", ".join(config.targets))
        try:
            await self._claim_loop()
            await self._hand_back(list(self._held))
            await self._drain()
        finally:
            self._leaving.set()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if self._given_client is None:
                for client in self._routes.clients():
                    await client.close()
            for db in (self._db, self._writer.db, self._housekeeping_db):
                await db.close()
            log.info("worker %s stopped: %s", config.worker_id, self.stats.as_dict())

    async def _migrate(self) -> None:
        """Brings the schema up to date, waiting for the database if it is not up yet."""
        while True:
            try:
                applied = await asyncio.to_thread(migrate, self.config.conninfo)
            except psycopg.OperationalError as error:
                if self._stop.is_set():
                    raise
                log.warning("database unavailable (%s); retrying the migration", error)
                await asyncio.sleep(1.0)
                continue
            if applied:
                log.info("migrated the queue to version %d", applied[-1])
            return

    # --- claiming ------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        next_reap = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            try:
                if now >= next_reap:
                    await self._reap()
                    next_reap = now + self.config.poll_s
                await self._hand_back(
                    [r for r in self._held if now - r.held_since > self.config.prefetch_hold_s]
                )
                self._start_held()
                free = max(self.config.concurrency - len(self._running), 0)
                prefetch = 0 if self._prefetch_paused else self.config.prefetch_jobs
                want = free + prefetch - len(self._held)
                if want > 0 and now >= self._paused_until:
                    sent = time.monotonic()
                    self._take(await self._claim(want), free, sent)
            except psycopg.Error:
                # Not a lost connection (that is waited out): log it, try again later.
                log.exception("claiming failed")
            timeout = self.config.poll_s
            if self._paused_until > now:
                timeout = min(timeout, self._paused_until - now)
            if self._held:
                timeout = min(timeout, self.config.prefetch_hold_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim(self, limit: int) -> list[JobRecord]:
        languages, labels = self._routes.can_run()
        rows = await self._db.fetch(
            f"select {JOB_COLUMNS} from gristmill.claim(%(worker)s, %(limit)s, %(lease)s,"
            " %(languages)s, %(labels)s)",
            {
                "limit": limit,
                "worker": self.config.worker_id,
                "lease": self.config.lease_s,
                "languages": languages,
                "labels": labels,
            },
        )
        jobs = [JobRecord.from_row(row) for row in rows]
        self.stats.claimed += len(jobs)
        return jobs

    def _take(self, jobs: list[JobRecord], free: int, sent: float) -> None:
        """Starts the claimed jobs (their claim sent at `sent`) there are slots for and
        holds the rest."""
        now = time.monotonic()
        lease_until = self._lease_until(sent)
        for n, job in enumerate(jobs):
            running = _Running(job, JobSpans(self._tracer, job, self.config.worker_id), lease_until)
            if n < free:
                self._start(running)
            else:
                running.held_since = now
                self._held.append(running)
                self.stats.prefetched += 1

    def _lease_until(self, sent: float) -> float:
        """When a lease set by a statement sent at `sent` surely still holds (earlier
        than the database's: the statement ran after `sent`)."""
        return sent + 0.9 * self.config.lease_s

    def _start_held(self) -> None:
        """Starts held jobs in the slots free, dropping those whose lease may be gone."""
        while self._held and len(self._running) < self.config.concurrency:
            running = self._held.popleft()
            if running.lease_lost or time.monotonic() >= running.lease_until:
                # Another worker may have it by now: running it here could run it twice.
                self.stats.fenced += 1
                running.spans.end("lease passed while held")
                log.warning("job %s: held past its lease; not run here", running.job.id)
                continue
            self._start(running)

    async def _hand_back(self, held: list[_Running]) -> None:
        """Prefetched jobs not started in time back to the queue (waking the workers),
        no attempt used; no more prefetch until one of our slots frees."""
        if not held:
            return
        for running in held:
            self._held.remove(running)
            running.spans.end("handed back")
        self.stats.handed_back += await leases.give_back(self._db, [r.job for r in held])
        self._prefetch_paused = True

    async def _reap(self) -> None:
        """Puts back the jobs of lost workers (their lease expired)."""
        reaped = await leases.reap(
            self._db, self.config.backoff_initial_s, self.config.backoff_max_s
        )
        if reaped:
            self.stats.reaped += reaped
            log.warning("put back %d job(s) of lost workers", reaped)

    def _start(self, running: _Running) -> None:
        job = running.job
        self._running[job.id] = running
        running.task = asyncio.create_task(self._run_job(running), name=f"job {job.id}")
        if job.cancel_requested:
            self._request_cancel(running)

    # --- one job -------------------------------------------------------------------

    async def _run_job(self, running: _Running) -> None:
        job = running.job
        try:
            if job.attempts > job.max_attempts:
                await self._fail(job, "attempts used up (the workers running it were lost)")
                return
            await self._execute(running)
        except Exception:
            log.exception("job %s: the worker failed", job.id)
        finally:
            running.spans.end("ended")
            self._running.pop(job.id, None)
            self._prefetch_paused = False
            self._start_held()  # no round trip to the database for the next one
            self._wake.set()

    def _call_timeout_s(self, job: JobRecord) -> float:
        wall_ms = int(job.limits.get("wall_time_ms", 0) or 0)
        wall_s = wall_ms / 1000 if wall_ms else self.config.default_wall_time_s
        return wall_s + self.config.call_margin_s

    async def _execute(self, running: _Running) -> None:
        job = running.job
        try:
            arguments = execute_arguments(job)
        except Exception as error:  # limits that do not parse, say: the job's own fault
            await self._fail(job, f"not a valid job: {error}")
            return
        target = self._routes.route(job)
        if target is None:  # what its servers run changed since the claim
            await self._release(job, f"no server of worker {self.config.worker_id} runs it")
            return
        metadata = running.spans.call_metadata(target.address)
        call = asyncio.ensure_future(
            target.client.execute(
                timeout_s=self._call_timeout_s(job), metadata=metadata, **arguments
            )
        )
        running.call = call
        target.in_flight += 1
        try:
            outcome = await call
        except asyncio.CancelledError as error:
            running.spans.call_ended(error)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # Abandoned on purpose: the lease passed to another worker, or a cancellation
            # no server acknowledged, or the stop's grace period ran out.
            if running.lease_lost:
                self.stats.fenced += 1
            elif running.cancel_requested:
                await self._record(job, cancelled_outcome(job.id))
            elif self._leaving.is_set() or self._stop.is_set():
                await self._release(job)
            return
        except grpc.RpcError as error:
            running.spans.call_ended(error)
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                target.down_until = time.monotonic() + self.config.backoff_initial_s
            await self._service_failed(job, error)
            return
        finally:
            target.in_flight -= 1
        running.spans.call_ended()
        await self._record(job, outcome)

    async def _record(self, job: JobRecord, outcome: pb.Outcome) -> None:
        """Writes the outcome, only while this claim still holds the lease."""
        columns = outcome_columns(outcome, self.config.max_log_bytes)
        if await self._writer.finish(job, vars(columns)):
            self.stats.recorded += 1
        else:
            self.stats.fenced += 1
            log.warning("job %s: lease lost, outcome dropped (another claim has it)", job.id)

    async def _service_failed(self, job: JobRecord, error: grpc.RpcError) -> None:
        code = error.code()
        message = f"{code.name}: {error.details()}"
        if code not in RETRYABLE:
            await self._fail(job, message)
            return
        exhausted = code == grpc.StatusCode.RESOURCE_EXHAUSTED
        if exhausted:
            # Backpressure: the servers are full, claim nothing for a while.
            pause = random.uniform(0.5, 1.0) * self.config.backoff_initial_s
            self._paused_until = max(self._paused_until, time.monotonic() + pause)
        backoff = min(
            self.config.backoff_max_s,
            self.config.backoff_initial_s * 2 ** max(job.attempts - 1, 0),
        ) * random.uniform(0.5, 1.0)
        state = await leases.retry(self._db, job, message, backoff, exhausted)
        if state is None:
            self.stats.fenced += 1
        elif state != "queued":
            self.stats.failed += 1
            log.warning("job %s failed: %s (attempts used up)", job.id, message)
        else:
            self.stats.retried += 1
            log.info("job %s back to the queue in %.1f s: %s", job.id, backoff, message)

    async def _fail(self, job: JobRecord, message: str) -> None:
        if await self._writer.finish(job, {"state": "failed", "last_error": message}):
            self.stats.failed += 1
            log.warning("job %s failed: %s", job.id, message)
        else:
            self.stats.fenced += 1

    async def _release(self, job: JobRecord, reason: str | None = None) -> None:
        """Gives a claimed job back to the queue without using up an attempt."""
        self.stats.released += await leases.give_back(self._db, [job], reason)

    # --- cancellation -----------------------------------------------------------------

    def _request_cancel(self, running: _Running) -> None:
        if running.cancel_requested:
            return
        running.cancel_requested = True
        task = asyncio.create_task(self._cancel(running), name=f"cancel {running.job.id}")
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def _cancel(self, running: _Running) -> None:
        def abandon() -> None:
            if running.call is not None and not running.call.done():
                running.call.cancel()

        await cancel_everywhere(running.job.id, self._routes.clients(), abandon)

    def _cancel_requested(self, job_id: str) -> None:
        if (running := self._running.get(job_id)) is not None:
            self._request_cancel(running)

    # --- background -------------------------------------------------------------------

    def _wake_soon(self) -> None:
        """Wakes the claim loop after a random pause (not every worker at the same
        instant: the first to claim takes the work, the others mostly find none)."""
        if self._wake.is_set() or len(self._running) >= self.config.concurrency:
            return
        asyncio.get_running_loop().call_later(
            random.uniform(0, self.config.wake_jitter_s), self._wake.set
        )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            try:
                await self._heartbeat()
            except psycopg.Error:
                log.exception("heartbeat failed")

    async def _heartbeat(self) -> None:
        """Extends the leases still held; abandons the jobs whose lease passed to another."""
        held = [r for r in (*self._running.values(), *self._held) if not r.lease_lost]
        if not held:
            return
        sent = time.monotonic()
        kept = await leases.extend(self._db, [r.job for r in held], self.config.lease_s)
        for running in held:
            if running.job.uid not in kept:
                if running.task is not None and running.task.done():
                    continue  # finished meanwhile: nothing to hold
                running.lease_lost = True
                log.warning("job %s: lease lost; abandoning its call", running.job.id)
                if running.call is not None:
                    running.call.cancel()
            else:
                running.lease_until = self._lease_until(sent)
                if kept[running.job.uid] and running.task is not None:
                    self._request_cancel(running)

    async def _drain(self) -> None:
        """At stop: lets running jobs finish within the grace period, releases the rest."""
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if not tasks:
            return
        log.info("stopping: %d job(s) running, %.0f s to finish", len(tasks), self.config.grace_s)
        _, pending = await asyncio.wait(tasks, timeout=self.config.grace_s)
        if pending:
            self._leaving.set()
            for running in list(self._running.values()):
                if running.call is not None:
                    running.call.cancel()
            await asyncio.wait(pending, timeout=30)
