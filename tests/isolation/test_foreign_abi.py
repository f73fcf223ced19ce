"""A system call of another ABI (x32, i386) kills the job's whole process, on each backend.

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

THREAD_LEFT_RUNNING = """
import ctypes
import mmap
import threading
import time

threading.Thread(target=time.sleep, args=(60,)).start()
"""

CALLS = {
    "x32": """
def main():
    ctypes.CDLL(None).syscall(0x40000000 | 39)  # x32 getpid
    return "not stopped"
""",
    # Machine code: mov eax, 20 (i386 getpid); int 0x80; ret.
    "i386": """
def main():
    code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(bytes.fromhex("b814000000cd80c3"))
    ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))()
    return "not stopped"
""",
}


@pytest.mark.parametrize("abi", CALLS)
async def test_a_call_of_another_abi_from_a_threaded_process_kills_the_process(
    executor: Executor, abi: str
) -> None:
    code = textwrap.dedent(THREAD_LEFT_RUNNING) + CALLS[abi]
    outcome = await run(executor, "python", code, wall_time_ms=20000)
    assert outcome.verdict is Verdict.SYSCALL_DENIED, outcome.detail
