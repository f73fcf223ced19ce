"""Runs one command of the service's own in a sandbox, to its end, without a job message.

The resolver's lock and install steps (`gristmill.deps.sandboxed`) and a language's
build step (`gristmill.jobs.build`) are such commands: started from a plan, their
output drained (progress lines passed on as they come), waited for with a grace past
their wall limit, stopped when their caller goes away, and judged by `failure`, in the
program's own words, so that each caller raises its own kind of failure from one text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gristmill.isolation.backend import (
    Sandbox,
    SandboxBackend,
    SandboxExit,
    SandboxPlan,
    StopReason,
)
from gristmill.model import Limits, Output
from gristmill.steps.output import CappedOutput

__all__ = ["LineSink", "StepRun", "drive", "failure", "run_step"]

LineSink = Callable[[str], None]
WALL_GRACE_S = 2.0
"""How long past its wall limit a step may take before the service stops it itself."""


class _Lines:
    """Splits a stream's chunks into lines for a progress display."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            if text := line.decode(errors="replace").strip():
                self._sink(text)


@dataclass(frozen=True)
class StepRun:
    """How a step ended and what it wrote, each stream kept up to `cap` bytes."""

    stdout: Output
    stderr: Output
    end: SandboxExit
    cap: int

    def said(self) -> str:
        """The program's own words: its stderr, else its stdout."""
        return (self.stderr.data or self.stdout.data).decode(errors="replace").strip()


async def run_step(
    backend: SandboxBackend,
    plan: SandboxPlan,
    on_line: LineSink,
    cap: int,
    stdout_is_progress: bool = True,
) -> StepRun:
    """Runs `plan` to its end; each line of stderr (and of stdout, unless it is the step's
    result) goes to `on_line` as it comes. Cancelling the call kills the sandbox."""
    sandbox = await backend.start(plan)

    def overflow() -> None:
        sandbox.stop(StopReason.OUTPUT)

    stdout_lines = _Lines(on_line).feed if stdout_is_progress else (lambda _chunk: None)
    stdout = CappedOutput(cap, stdout_lines, overflow)
    stderr = CappedOutput(cap, _Lines(on_line).feed, overflow)
    result = CappedOutput(0, lambda _chunk: None, lambda: None)
    end = await drive(sandbox, plan.limits, b"", (stdout, stderr, result))
    return StepRun(stdout.output(), stderr.output(), end, cap)


async def drive(
    sandbox: Sandbox,
    limits: Limits,
    message: bytes,
    outputs: tuple[CappedOutput, CappedOutput, CappedOutput],
    on_started: Callable[[int], None] = lambda _pid: None,
    cancel: asyncio.Event | None = None,
    stdin: bytes = b"",
) -> SandboxExit:
    """Hands a started sandbox its job message (and `stdin`) and waits for its end, draining
    its stdout, stderr and result channel into `outputs` as it goes.

    Setting `cancel`, or cancelling the call, kills the sandbox; the latter still waits
    until its processes are gone. Past its wall limit plus a grace the service stops the
    sandbox itself, should the supervisor's own clock have failed.
    """
    stdout, stderr, result = outputs
    tasks = [
        asyncio.ensure_future(stdout.drain(sandbox.stdout)),
        asyncio.ensure_future(stderr.drain(sandbox.stderr)),
        asyncio.ensure_future(result.drain(sandbox.result)),
        asyncio.ensure_future(sandbox.send_job(message, stdin)),
    ]
    watcher = asyncio.ensure_future(_stop_on(cancel, sandbox))
    try:
        on_started(await sandbox.started())
        end = await _wait(sandbox, limits.wall_time_ms / 1000 + WALL_GRACE_S)
        await asyncio.gather(*tasks)
    except BaseException:
        sandbox.stop(StopReason.CANCEL)
        with contextlib.suppress(Exception):
            await asyncio.shield(sandbox.wait())
        raise
    finally:
        watcher.cancel()
        for task in tasks:
            task.cancel()
    return end


async def _stop_on(cancel: asyncio.Event | None, sandbox: Sandbox) -> None:
    if cancel is not None:
        await cancel.wait()
        sandbox.stop(StopReason.CANCEL)


async def _wait(sandbox: Sandbox, timeout_s: float) -> SandboxExit:
    try:
        return await asyncio.wait_for(asyncio.shield(sandbox.wait()), timeout_s)
    except TimeoutError:
        sandbox.stop(StopReason.WALL_TIME)
        return await sandbox.wait()


def failure(run: StepRun, plan: SandboxPlan) -> str | None:
    """Why the step failed, in the program's words where it has any; None if it succeeded.

    A sandbox that could not start is not covered: that is the service failing, and
    the caller raises `SandboxFailure` for `run.end.setup_error` first.
    """
    end, said, program = run.end, run.said(), Path(plan.argv[0]).name
    if end.oom_killed or end.stopped_for in (StopReason.MEMORY, StopReason.SOCKET_MEMORY):
        limit_mib = plan.limits.memory_bytes // (1024 * 1024)
        return f"{program} ran out of memory ({limit_mib} MiB)\n{said}"
    if end.stopped_for in (StopReason.WALL_TIME, StopReason.CPU_TIME):
        seconds = plan.limits.wall_time_ms / 1000
        return f"{program} did not finish within {seconds:g} s\n{said}"
    if end.stopped_for is StopReason.OUTPUT:
        return f"{program} wrote more than {run.cap} bytes"
    if end.exit_code != 0 or end.signal:
        status = f"signal {end.signal}" if end.signal else f"exit status {end.exit_code}"
        return said or f"{program} failed ({status})"
    return None
