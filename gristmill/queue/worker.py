"""The queue worker: jobs from PostgreSQL to `Execute` and their outcomes back, none lost.

One worker runs up to `concurrency` jobs at once:

- **Claim**: `gristmill.claim` shares the slots fairly between tenants (see migration 3)
  and, with `FOR UPDATE SKIP LOCKED`, takes ready jobs no other worker is taking, marks
  them running under a lease (`lease_expires_at`) and gives each claim a new fencing
  token (`lease_token`, from a sequence). New work is noticed through LISTEN/NOTIFY
  (`gristmill_jobs`, once per enqueuing transaction; each worker wakes after a random
  pause of up to `wake_jitter_s`), with a poll every `poll_s` in case one was missed.
  Each claim first promotes the scheduled jobs that are due (`run_after` reached).
- **Heartbeat**: every `heartbeat_s` the worker extends the leases it holds (those whose
  token still matches). A lease it no longer holds means another worker has the job: the
  call is abandoned and its outcome, if any, never written.
- **Reap**: every worker puts jobs whose lease expired (a worker lost) back in the queue
  with a backoff, or fails them once their attempts are used up.
- **Maintain**: now and then a worker creates the history's partitions ahead and drops
  those past `retention_s` (`gristmill.maintain`, one worker at a time).
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
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import psycopg

from gristmill.client import AsyncClient, RetryPolicy
from gristmill.credentials import Credentials
from gristmill.queue.migrations import migrate
from gristmill.queue.records import JOB_COLUMNS, JobRecord, execute_arguments, outcome_columns
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["Worker", "WorkerConfig", "WorkerStats", "channel_target", "parse_target"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

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


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs; `targets` are gristmill servers ("host:port", or one DNS name)."""

    conninfo: str
    targets: tuple[str, ...]
    concurrency: int = 4
    lease_s: float = 30.0
    heartbeat_s: float | None = None  # default: a third of the lease
    poll_s: float = 2.0
    grace_s: float = 30.0
    # A call's deadline: the job's wall time (or `default_wall_time_s`) plus this margin,
    # for queueing on the server, dependencies and the build.
    call_margin_s: float = 120.0
    default_wall_time_s: float = 900.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_log_bytes: int = 64 * 1024
    # The outcomes that come in while a write-back runs go in the next one, together;
    # `batch_s` waits that much more before each to gather more (0: no wait).
    batch_s: float = 0.0
    # Finished jobs are kept this long (whole days: the history's partitions are dropped
    # once wholly older); `gristmill.maintain` runs every `maintain_s` on some worker.
    retention_s: float = 7 * 86400.0
    maintain_s: float = 300.0
    # The live tables are vacuumed when they hold this many dead rows (looked at every
    # `vacuum_s`), more often than autovacuum would.
    vacuum_dead_tuples: int = 20_000
    vacuum_s: float = 5.0
    # A notification of new work wakes the worker after a random pause up to this, so
    # that the workers do not all claim at once (the first ones take the work).
    wake_jitter_s: float = 0.005
    # How often servers not reached yet are asked what they run, and the queue told.
    discover_s: float = 10.0
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    migrate: bool = True
    # How the worker shows itself to the servers; None: from the environment
    # (`GRISTMILL_TOKEN`, `GRISTMILL_TLS_CA`, ...; see `gristmill.credentials`).
    credentials: Credentials | None = None

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3


@dataclass
class WorkerStats:
    """What a worker did, for logs and tests."""

    claimed: int = 0
    recorded: int = 0  # outcomes written (done or cancelled)
    failed: int = 0  # jobs failed: refused by the server, or retries used up
    retried: int = 0  # sent back to the queue after a service failure
    fenced: int = 0  # outcomes dropped: the lease had passed to another worker
    released: int = 0  # given back at stop
    reaped: int = 0  # expired leases of other (lost) workers put back
    write_backs: int = 0  # statements that wrote outcomes (each a batch)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def parse_target(text: str) -> tuple[str, frozenset[str]]:
    """A `--target`: "host:port" (or one DNS name, or a gRPC URI), then optionally
    "=label,label": the labels that server has, which jobs' `tags` may require."""
    address, _, labels = text.partition("=")
    return address, frozenset(label for label in labels.split(",") if label)


def channel_target(address: str) -> str:
    """The gRPC target of one server: a URI as is; a name (or IP) through `dns:///`,
    which spreads calls over every address of a name (round_robin)."""
    if "://" in address or address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    return f"dns:///{address}"


@dataclass(eq=False)
class _Target:
    """A server (or one name of several) and what this worker knows of it."""

    address: str
    labels: frozenset[str]
    client: AsyncClient
    languages: frozenset[str] | None = None  # None: not reached yet (runs anything)
    capacity: int = 0  # its slots plus queue places for us (0: not known)
    in_flight: int = 0
    down_until: float = 0.0  # it failed as unreachable: others first until then

    def runs(self, job: JobRecord) -> bool:
        known = self.languages is None or job.language in self.languages
        return known and set(job.tags) <= self.labels

    def load(self) -> float:
        return self.in_flight / self.capacity if self.capacity else float(self.in_flight)


class _Database:
    """One connection, one statement at a time, reconnecting until PostgreSQL answers."""

    def __init__(self, conninfo: str, gone: asyncio.Event) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        # Set when waiting for the database is no longer useful (the worker is leaving).
        self._gone = gone

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        pause = 0.1
        async with self._lock:
            while True:
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self._conninfo, autocommit=True, connect_timeout=5
                        )
                    return await work(self._conn)
                except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                    if self._gone.is_set():
                        raise
                    log.warning("database unavailable (%s); retrying in %.1f s", error, pause)
                    await self._close()
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 2.0)

    async def fetch(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(query.encode(), params)
            return await cursor.fetchall() if cursor.description else []

        return await self.run(work)

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def close(self) -> None:
        async with self._lock:
            await self._close()


@dataclass(eq=False)
class _Running:
    job: JobRecord
    task: asyncio.Task[None] | None = None
    call: asyncio.Future[pb.Outcome] | None = None
    cancel_requested: bool = False
    lease_lost: bool = False


class Worker:
    def __init__(self, config: WorkerConfig, client: AsyncClient | None = None) -> None:
        """`client`: the client of every target instead of one each (a bench measures
        the queue alone with a target that answers at once)."""
        self.config = config
        self._given_client = client
        self._targets: list[_Target] = []
        self.stats = WorkerStats()
        self._stop = asyncio.Event()
        self._leaving = asyncio.Event()
        self._wake = asyncio.Event()
        self._db = _Database(config.conninfo, self._leaving)
        # Write-backs on a connection of their own: they do not wait behind claims; nor
        # do claims behind housekeeping (vacuum, partitions, routes).
        self._write_db = _Database(config.conninfo, self._leaving)
        self._housekeeping_db = _Database(config.conninfo, self._leaving)
        self._running: dict[str, _Running] = {}
        self._paused_until = 0.0
        self._cancelling: set[asyncio.Task[None]] = set()
        self._outbox: list[tuple[JobRecord, dict[str, Any], asyncio.Future[bool]]] = []
        self._outbox_ready = asyncio.Event()

    def stop(self) -> None:
        """Asks the worker to stop: no new claims, running jobs get the grace period."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Runs until `stop`; returns once every job is finished or released."""
        config = self.config
        if config.migrate:
            await self._migrate()
        # Not waiting for a server to come back: the queue retries with its own backoff,
        # routed to the other servers meanwhile.
        retry = RetryPolicy(wait_for_ready=False)
        options: list[tuple[str, Any]] = [
            *retry.channel_options(),
            ("grpc.lb_policy_name", "round_robin"),
        ]
        credentials = config.credentials or Credentials.from_env()
        for text in config.targets:
            address, labels = parse_target(text)
            client = self._given_client or AsyncClient(
                "",
                retry=retry,
                channel=credentials.aio_channel(channel_target(address), options),
                credentials=credentials,
            )
            self._targets.append(_Target(address, labels, client))
        await self._discover_logged()
        helpers = [
            asyncio.create_task(self._discovery(), name="discovery"),
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self._heartbeats(), name="heartbeats"),
            asyncio.create_task(self._write_back(), name="write-back"),
            asyncio.create_task(self._maintenance(), name="maintenance"),
        ]
        log.info("worker %s: serving %s", config.worker_id, ", ".join(config.targets))
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            self._leaving.set()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if self._given_client is None:
                for target in self._targets:
                    await target.client.close()
            await self._db.close()
            await self._write_db.close()
            await self._housekeeping_db.close()
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
                free = self.config.concurrency - len(self._running)
                if free > 0 and now >= self._paused_until:
                    for job in await self._claim(free):
                        self._start(job)
            except psycopg.Error:
                # Not a lost connection (that is waited out): log it, try again later.
                log.exception("claiming failed")
            timeout = self.config.poll_s
            if self._paused_until > now:
                timeout = min(timeout, self._paused_until - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim(self, limit: int) -> list[JobRecord]:
        languages, labels = self._can_run()
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

    async def _reap(self) -> None:
        """Puts back the jobs of lost workers (their lease expired)."""
        rows = await self._db.fetch(
            "select gristmill.reap(%s, %s)",
            (self.config.backoff_initial_s, self.config.backoff_max_s),
        )
        if rows and rows[0][0]:
            self.stats.reaped += int(rows[0][0])
            log.warning("put back %d job(s) of lost workers", rows[0][0])

    async def _maintain(self) -> None:
        """Creates the history's partitions ahead and drops those past the retention."""
        rows = await self._housekeeping_db.fetch(
            "select created, dropped from gristmill.maintain(%s * interval '1 second')",
            (self.config.retention_s,),
        )
        for created, dropped in rows:
            if created or dropped:
                log.info("history partitions created %s, dropped %s", created, dropped)

    def _start(self, job: JobRecord) -> None:
        running = _Running(job)
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
            self._running.pop(job.id, None)
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
        target = self._route(job)
        if target is None:  # what its servers run changed since the claim
            await self._release(job, f"no server of worker {self.config.worker_id} runs it")
            return
        call = asyncio.ensure_future(
            target.client.execute(timeout_s=self._call_timeout_s(job), **arguments)
        )
        running.call = call
        target.in_flight += 1
        try:
            outcome = await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            # Abandoned on purpose: the lease passed to another worker, or a cancellation
            # no server acknowledged, or the stop's grace period ran out.
            if running.lease_lost:
                self.stats.fenced += 1
            elif running.cancel_requested:
                await self._record(job, _cancelled_outcome(job.id))
            elif self._leaving.is_set() or self._stop.is_set():
                await self._release(job)
            return
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                target.down_until = time.monotonic() + self.config.backoff_initial_s
            await self._service_failed(job, error)
            return
        finally:
            target.in_flight -= 1
        await self._record(job, outcome)

    async def _record(self, job: JobRecord, outcome: pb.Outcome) -> None:
        """Writes the outcome, only while this claim still holds the lease."""
        columns = outcome_columns(outcome, self.config.max_log_bytes)
        if await self._finish(job, vars(columns)):
            self.stats.recorded += 1
        else:
            self.stats.fenced += 1
            log.warning("job %s: lease lost, outcome dropped (another claim has it)", job.id)

    async def _finish(self, job: JobRecord, columns: dict[str, Any]) -> bool:
        """Moves the job to the history with these outcome columns, in the next batch;
        whether its lease (its token) still held."""
        ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outbox.append((job, columns, ended))
        self._outbox_ready.set()
        return await ended

    async def _write_back(self) -> None:
        """Writes the outcomes waiting in one statement (`gristmill.finish`, fenced by
        each job's token): those that ended while the previous one ran, or together."""
        while True:
            await self._outbox_ready.wait()
            await asyncio.sleep(self.config.batch_s)  # at 0: lets the same instant's join
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            try:
                moved = await self._write_db.fetch(_FINISH, _finish_arrays(batch))
            except Exception as error:
                for _, _, ended in batch:
                    ended.set_exception(error)
                continue
            self.stats.write_backs += 1
            kept = {row[0] for row in moved}
            for job, _, ended in batch:
                ended.set_result(job.uid in kept)

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
        rows = await self._db.fetch(
            "select gristmill.retry(%s, %s, %s, %s, %s)",
            (job.uid, job.lease_token, message, backoff, exhausted),
        )
        if not rows or rows[0][0] is None:
            self.stats.fenced += 1
        elif rows[0][0] != "queued":
            self.stats.failed += 1
            log.warning("job %s failed: %s (attempts used up)", job.id, message)
        else:
            self.stats.retried += 1
            log.info("job %s back to the queue in %.1f s: %s", job.id, backoff, message)

    async def _fail(self, job: JobRecord, message: str) -> None:
        if await self._finish(job, {"state": "failed", "last_error": message}):
            self.stats.failed += 1
            log.warning("job %s failed: %s", job.id, message)
        else:
            self.stats.fenced += 1

    async def _release(self, job: JobRecord, reason: str | None = None) -> None:
        """Gives a claimed job back to the queue without using up an attempt."""
        rows = await self._db.fetch(
            """
            update gristmill.queue
               set state = 'queued', attempts = attempts - 1, run_after = now(),
                   lease_expires_at = null, last_error = coalesce(%(reason)s, last_error)
             where uid = %(uid)s and lease_token = %(token)s and state = 'running'
            returning uid
            """,
            {"uid": job.uid, "token": job.lease_token, "reason": reason},
        )
        self.stats.released += len(rows)

    # --- routing --------------------------------------------------------------------

    def _route(self, job: JobRecord) -> _Target | None:
        """The server for a job: of those that run its language and have its labels, one
        reachable with the most free room (random among equals); None when none runs it."""
        able = [target for target in self._targets if target.runs(job)]
        now = time.monotonic()
        candidates = [target for target in able if target.down_until <= now] or able
        random.shuffle(candidates)
        return min(candidates, key=_Target.load, default=None)

    def _can_run(self) -> tuple[list[str] | None, list[str]]:
        """The languages (None: any, while a server is not reached) and labels the
        servers have between them: what the claim may take."""
        languages: set[str] = set()
        for target in self._targets:
            if target.languages is None:
                return None, sorted(set().union(*(t.labels for t in self._targets)))
            languages |= target.languages
        return sorted(languages), sorted(set().union(*(t.labels for t in self._targets)))

    async def _discover(self) -> None:
        """Asks each server not known yet what it runs (`ListRuntimes`), then tells the
        queue (`gristmill.routes`), which marks the jobs no worker can run."""

        async def ask(target: _Target) -> None:
            try:
                info = await target.client.list_runtimes(timeout_s=5)
            except grpc.RpcError as error:
                log.info("server %s not reached (%s)", target.address, error.code().name)
                return
            target.languages = frozenset(r.language for r in info.runtimes if r.available)
            target.capacity = info.caller.max_concurrent_jobs + info.caller.max_queued_jobs

        await asyncio.gather(*(ask(t) for t in self._targets if t.languages is None))
        languages, labels = self._can_run()
        marked = await self._housekeeping_db.fetch(
            "select gristmill.routes(%s, %s, %s, %s * interval '1 second')",
            (self.config.worker_id, languages, labels, 6 * self.config.discover_s),
        )
        if marked and marked[0][0]:
            log.info("%d queued job(s) marked or unmarked as no worker's to run", marked[0][0])

    async def _discover_logged(self) -> None:
        try:
            await self._discover()
        except psycopg.Error:
            log.exception("discovery failed")

    async def _discovery(self) -> None:
        while True:
            await asyncio.sleep(self.config.discover_s)
            await self._discover_logged()

    # --- cancellation -----------------------------------------------------------------

    def _request_cancel(self, running: _Running) -> None:
        if running.cancel_requested:
            return
        running.cancel_requested = True
        task = asyncio.create_task(self._cancel(running), name=f"cancel {running.job.id}")
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def _cancel(self, running: _Running) -> None:
        job_id = running.job.id
        # It must reach the server running the job: ask each one.
        clients = {id(t.client): t.client for t in self._targets}.values()
        answers = await asyncio.gather(
            *(client.cancel(job_id, timeout_s=10) for client in clients),
            return_exceptions=True,
        )
        if any(answer is True for answer in answers):
            log.info("job %s cancelled on its server", job_id)
            return  # its Execute answers with the CANCELLED outcome
        # No server had it running (not yet there, or a name we cannot enumerate): give
        # the call a moment to reach a server, then abandon it, which kills the run.
        await asyncio.sleep(1.0)
        if running.call is not None and not running.call.done():
            running.call.cancel()

    # --- background --------------------------------------------------------------------

    async def _listen(self) -> None:
        """Wakes the claim loop on `gristmill_jobs`, cancels on `gristmill_cancel`."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.config.conninfo, autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute("listen gristmill_jobs")
                    await conn.execute("listen gristmill_cancel")
                    self._wake.set()  # anything sent while not listening
                    async for note in conn.notifies():
                        if note.channel == "gristmill_jobs":
                            self._wake_soon()
                        elif (running := self._running.get(note.payload)) is not None:
                            self._request_cancel(running)
            except psycopg.Error as error:
                log.info("listener lost the database (%s); polling until it is back", error)
            await asyncio.sleep(1.0)

    async def _maintenance(self) -> None:
        next_maintain = 0.0
        while True:
            try:
                if time.monotonic() >= next_maintain:
                    await self._maintain()
                    next_maintain = time.monotonic() + self.config.maintain_s
                await self._vacuum()
            except psycopg.Error:
                log.exception("maintenance failed")
            await asyncio.sleep(min(self.config.maintain_s, self.config.vacuum_s))

    async def _vacuum(self) -> None:
        """Vacuums the live queue once it holds `vacuum_dead_tuples` dead rows: every
        job leaves two there, faster than autovacuum comes round (once a minute), and
        the claim's index walks would step over them (`skip_locked`: one worker at it)."""
        rows = await self._housekeeping_db.fetch(
            "select coalesce(sum(n_dead_tup), 0) from pg_stat_user_tables"
            " where relid in ('gristmill.queue'::regclass, 'gristmill.payloads'::regclass)"
        )
        if rows and rows[0][0] >= self.config.vacuum_dead_tuples:
            await self._housekeeping_db.fetch(
                "vacuum (skip_locked) gristmill.queue, gristmill.payloads"
            )

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
        held = [r for r in self._running.values() if not r.lease_lost]
        if not held:
            return
        rows = await self._db.fetch(
            """
            update gristmill.queue j
               set lease_expires_at = now() + make_interval(secs => %(lease)s)
              from unnest(%(uids)s::uuid[], %(tokens)s::bigint[]) as h(uid, token)
             where j.uid = h.uid and j.lease_token = h.token and j.state = 'running'
            returning j.uid, j.cancel_requested
            """,
            {
                "lease": self.config.lease_s,
                "uids": [r.job.uid for r in held],
                "tokens": [r.job.lease_token for r in held],
            },
        )
        kept = {uid: bool(cancel) for uid, cancel in rows}
        for running in held:
            if running.job.uid not in kept:
                if running.task is not None and running.task.done():
                    continue  # finished meanwhile: nothing to hold
                running.lease_lost = True
                log.warning("job %s: lease lost; abandoning its call", running.job.id)
                if running.call is not None:
                    running.call.cancel()
            elif kept[running.job.uid]:
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


def _finish_arrays(
    batch: Sequence[tuple[JobRecord, dict[str, Any], object]],
) -> list[list[Any]]:
    """`gristmill.finish`'s arguments for a batch: one array per column."""
    return [
        [job.uid for job, _, _ in batch],
        [job.lease_token for job, _, _ in batch],
        *([columns.get(name) for _, columns, _ in batch] for name, _ in _OUTCOME_FIELDS),
    ]


def _cancelled_outcome(job_id: str) -> pb.Outcome:
    return pb.Outcome(
        job_id=job_id,
        verdict=pb.CANCELLED,
        detail="cancelled from the queue before a server acknowledged it; its call abandoned",
    )
