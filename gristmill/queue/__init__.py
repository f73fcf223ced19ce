"""The queue: jobs in PostgreSQL, run by workers that call gristmill servers.

A client of the service like any other (it depends on `gristmill.client`, never on
`gristmill.server`): `Queue` enqueues, reads, waits for and cancels jobs; `Worker` claims
them, runs them through `Execute` and writes their outcomes back; `migrate` creates or
upgrades the schema. See "The queue worker" in the README.

The names are imported on first use, so that the `gristmill` command, which registers
the queue's subcommands, does not pay for psycopg unless a queue command runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "MIGRATIONS": "migrations",
    "current_version": "migrations",
    "migrate": "migrations",
    "Queue": "queue",
    "WaitTimeout": "queue",
    "JobRecord": "records",
    "Worker": "worker",
    "WorkerConfig": "worker",
    "WorkerStats": "worker",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gristmill.queue' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gristmill.queue.{home}"), name)
