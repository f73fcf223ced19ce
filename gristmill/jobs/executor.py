"""Runs one job: prepare its directory, start its sandbox, collect, decide.

(Interface fixed; implementation in progress.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from gristmill.isolation.backend import SandboxBackend, SandboxInfo
from gristmill.languages import Registry
from gristmill.model import Job, JobEvent, Outcome

EventSink = Callable[[JobEvent], None]


class Executor:
    def __init__(self, registry: Registry, backend: SandboxBackend, work_dir: Path) -> None:
        self.registry = registry
        self.backend = backend
        self.work_dir = work_dir

    def sandbox_info(self) -> SandboxInfo:
        return self.backend.info()

    async def run(
        self, job: Job, on_event: EventSink | None = None, cancel: asyncio.Event | None = None
    ) -> Outcome:
        """Runs `job` to its end and returns its outcome; never raises for what the job did.

        Setting `cancel` kills the job; the outcome is then CANCELLED.
        Raises `gristmill.errors.GristmillError` only for the service's own failures.
        """
        raise NotImplementedError
