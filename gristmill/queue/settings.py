"""How a queue worker runs (`WorkerConfig`) and what it did (`WorkerStats`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from gristmill.credentials import Credentials

__all__ = ["WorkerConfig", "WorkerStats"]


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
    # Claimed beyond the free slots, held under their lease, so that a slot that frees
    # starts one at once (None: an eighth of the slots, 1 to 32; 0: none). A job held
    # longer than `prefetch_hold_s` goes back to the queue for another worker.
    prefetch: int | None = None
    prefetch_hold_s: float = 0.5
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

    @property
    def prefetch_jobs(self) -> int:
        return (
            self.prefetch if self.prefetch is not None else min(32, max(1, self.concurrency // 8))
        )


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
    prefetched: int = 0  # claimed beyond the free slots
    handed_back: int = 0  # prefetched, not started in time: back to the queue

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))
