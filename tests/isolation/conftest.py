"""A real executor on the real sandbox, shared by the tests of this folder."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gristmill.errors import SandboxFailure
from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.languages import Registry
from gristmill.model import Job, Limits, Outcome
from tests.conftest import remove_work_dir

LIMITS = Limits(
    wall_time_ms=5000,
    memory_bytes=128 << 20,
    cpu_time_ms=5000,
    processes=32,
    output_bytes=64 << 10,
)


@pytest_asyncio.fixture(scope="session", loop_scope="session", params=["process", "nsjail"])
async def executor(request: pytest.FixtureRequest) -> AsyncIterator[Executor]:
    """A real executor on each backend in turn: every attack test runs on both."""
    # /var/tmp, not pytest's tmp_path: the jail's uid must be able to reach it.
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    try:
        backend = open_backend(request.param, work_dir)
    except SandboxFailure as unusable:
        pytest.skip(f"{request.param}: {unusable}")
    executor = Executor(compose(Registry(), backend, work_dir))
    yield executor
    await executor.close()
    remove_work_dir(work_dir)


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


@pytest.fixture(scope="module")
def nsjail_run() -> Iterator[Callable[..., Outcome]]:
    """Runs one job on the nsjail backend, synchronously: `nsjail_run(language, code)`."""
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    backend = open_backend("nsjail", work_dir)
    executor = Executor(compose(Registry(), backend, work_dir))

    def run_one(language: str, code: str, **limits: Any) -> Outcome:
        return asyncio.run(run(executor, language, code, **limits))

    yield run_one
    asyncio.run(executor.close())
    remove_work_dir(work_dir)
