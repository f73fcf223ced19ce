"""The queue: jobs in PostgreSQL, run by workers that call gristmill servers.

A client of the service like any other (it depends on `gristmill.client`, never on
`gristmill.server`): `Queue` enqueues, reads, waits for and cancels jobs; `Worker` claims
them, runs them through `Execute` and writes their outcomes back; `migrate` creates or
upgrades the schema. See `gristmill/queue/README.md`.
"""

from gristmill.queue.migrations import MIGRATIONS, current_version, migrate
from gristmill.queue.queue import Queue, WaitTimeout
from gristmill.queue.records import JobRecord
from gristmill.queue.worker import Worker, WorkerConfig, WorkerStats

__all__ = [
    "MIGRATIONS",
    "JobRecord",
    "Queue",
    "WaitTimeout",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "current_version",
    "migrate",
]
