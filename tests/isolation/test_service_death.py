"""If the service dies, every job it started dies with it: nothing is orphaned."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from tests.conftest import sandbox_work_dir

from .test_process_backend import _alive


def test_jobs_die_when_the_service_dies() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from pathlib import Path
        from gristmill.isolation.select import open_backend
        from gristmill.jobs.executor import Executor
        from gristmill.jobs.parts import compose
        from gristmill.languages import Registry
        from gristmill.model import Job, Limits

        async def main():
            work = Path(sys.argv[1])
            executor = Executor(compose(Registry(), open_backend(None, work), work))
            limits = Limits(60000, 64 << 20, 60000, 8, 1 << 16)
            job = Job("orphan", "bash", "echo started\\nsleep 16180\\n", "main", {}, limits)
            await executor.run(job, on_event=lambda e: print(e, flush=True))

        asyncio.run(main())
        """
    )
    with sandbox_work_dir() as work_dir:
        _kill_the_service_while_its_job_runs(script, str(work_dir))


def _kill_the_service_while_its_job_runs(script: str, work_dir: str) -> None:
    argv = [sys.executable, "-c", script, work_dir]
    service = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert service.stdout is not None
    for line in service.stdout:
        if "started" in line and "OutputEvent" in line:
            break
    assert _alive("sleep 16180")
    service.send_signal(signal.SIGKILL)
    service.wait()
    deadline = time.monotonic() + 5
    while _alive("sleep 16180") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive("sleep 16180") == []
