"""A real executor on the real sandbox, shared by the tests of this folder."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.languages import Registry
from gristmill.model import Job, Limits, Outcome

LIMITS = Limits(
    wall_time_ms=5000,
    memory_bytes=128 << 20,
    cpu_time_ms=5000,
    processes=32,
    output_bytes=64 << 10,
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def executor() -> AsyncIterator[Executor]:
    # /var/tmp, not pytest's tmp_path: the jail's uid must be able to reach it.
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    backend = open_backend(None, work_dir)
    yield Executor(Registry(), backend, work_dir)
    await backend.close()
    shutil.rmtree(work_dir, ignore_errors=True)


async def run(
    executor: Executor,
    language: str,
    code: str,
    args: dict[str, object] | None = None,
    **limits: Any,
) -> Outcome:
    job = Job(
        id="test",
        language=language,
        code=code,
        entry_point="main",
        args=args or {},
        limits=dataclasses.replace(LIMITS, **limits),
    )
    return await executor.run(job)
