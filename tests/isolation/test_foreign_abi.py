"""A system call of another ABI (x32) kills the job's whole process, on each backend.

Killing only the calling thread would leave a runtime with threads of its own (Bun,
the JVM, Mono) running on to the wall time, as if the filter had let the call through.
"""

from __future__ import annotations

import textwrap

import pytest

from gristmill.jobs.executor import Executor
from gristmill.model import Verdict

from .conftest import run

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_x32_call_from_a_threaded_process_kills_the_process(executor: Executor) -> None:
    code = textwrap.dedent(
        """
        import ctypes
        import threading
        import time

        def main():
            threading.Thread(target=time.sleep, args=(60,)).start()
            ctypes.CDLL(None).syscall(0x40000000 | 39)  # x32 getpid
            return "not stopped"
        """
    )
    outcome = await run(executor, "python", code, wall_time_ms=20000)
    assert outcome.verdict is Verdict.SYSCALL_DENIED, outcome.detail
