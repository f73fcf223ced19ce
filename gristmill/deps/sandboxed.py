"""Runs a resolver's step in a sandbox of its own: network on, writes only where it must.

The same backend that runs jobs runs the resolver, under the language's profile plus
three mounts: the resolver's programs (read-only), its download cache (writable,
shared by every resolve) and, for an install, the environment being built (writable).
Its limits are the service's `deps` settings, never a job's; it gets the network
because it must reach the registries, and nothing of the service's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gristmill.deps.errors import DependencyFailure
from gristmill.deps.tool import JAIL_BUILD_DIR, JAIL_TOOL_CACHE_DIR, JAIL_TOOLS_DIR, Step
from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import (
    Sandbox,
    SandboxBackend,
    SandboxExit,
    SandboxPlan,
    StopReason,
)
from gristmill.isolation.profile import BindMount, SandboxProfile
from gristmill.jobs.output import CappedOutput
from gristmill.jobs.workspace import safe_relative_path
from gristmill.model import Limits

__all__ = ["ToolRunner"]

OUTPUT_CAP_BYTES = 16 * 1024 * 1024
"""What is kept of a step's stdout and stderr: a lockfile with hashes, or the error."""
FILE_SIZE_BYTES = 2 * 1024 * 1024 * 1024
"""Largest file a step may write: wheels of scientific packages run to hundreds of MiB."""
TMPFS_BYTES = 256 * 1024 * 1024
"""The step's /tmp, where source builds unpack; it counts against its memory limit."""
WALL_GRACE_S = 2.0

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class ToolPaths:
    """Host directories the runner mounts and works in."""

    # The resolver's programs, readable by the sandbox's user.
    tools_dir: Path
    # The resolver's download cache, owned by the sandbox's user.
    cache_dir: Path
    # Where each step's own /job and root directories are made and removed.
    work_dir: Path


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


class ToolRunner:
    def __init__(self, backend: SandboxBackend, paths: ToolPaths, limits: Limits) -> None:
        self.backend = backend
        self.paths = paths
        self.limits = dataclasses.replace(limits, network=True)

    async def run(
        self,
        step: Step,
        profile: SandboxProfile,
        on_line: LineSink,
        build_dir: Path | None = None,
    ) -> str | None:
        """Runs `step`; returns its stdout when that is its result, else None.

        Raises `DependencyFailure` with the tool's own message when it fails.
        """
        base = self.paths.work_dir / uuid.uuid4().hex
        try:
            await asyncio.to_thread(self._prepare, base, step, profile)
            plan = self._plan(step, profile, base, build_dir)
            stdout, stderr, end = await self._supervise(plan, step, on_line)
            self._check(step, end, stdout, stderr)
            return stdout.output().data.decode() if step.stdout_is_result else None
        finally:
            await asyncio.to_thread(shutil.rmtree, base, True)

    def _prepare(self, base: Path, step: Step, profile: SandboxProfile) -> None:
        job_dir = base / "job"
        (base / "root").mkdir(parents=True, mode=0o755)
        job_dir.mkdir(mode=0o755)
        for relative, content in step.files.items():
            target = job_dir / safe_relative_path(relative, "files")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            os.chown(target, profile.uid, profile.gid)
        os.chown(job_dir, profile.uid, profile.gid)

    def _plan(
        self, step: Step, profile: SandboxProfile, base: Path, build_dir: Path | None
    ) -> SandboxPlan:
        mounts = [
            BindMount(str(self.paths.tools_dir), JAIL_TOOLS_DIR),
            BindMount(str(self.paths.cache_dir), JAIL_TOOL_CACHE_DIR, writable=True),
        ]
        if build_dir is not None:
            mounts.append(BindMount(str(build_dir), JAIL_BUILD_DIR, writable=True))
        profile = dataclasses.replace(
            profile.with_mounts(*mounts), file_size_bytes=FILE_SIZE_BYTES, tmpfs_bytes=TMPFS_BYTES
        )
        return SandboxPlan(
            profile=profile,
            argv=step.argv,
            env={**profile.env, **step.env},
            job_dir=base / "job",
            root_dir=base / "root",
            limits=self.limits,
        )

    async def _supervise(
        self, plan: SandboxPlan, step: Step, on_line: LineSink
    ) -> tuple[CappedOutput, CappedOutput, SandboxExit]:
        sandbox = await self.backend.start(plan)
        lines = _Lines(on_line)

        def overflow() -> None:
            sandbox.stop(StopReason.OUTPUT)

        stdout_lines = (lambda _chunk: None) if step.stdout_is_result else lines.feed
        stdout = CappedOutput(OUTPUT_CAP_BYTES, stdout_lines, overflow)
        stderr = CappedOutput(OUTPUT_CAP_BYTES, _Lines(on_line).feed, overflow)
        result = CappedOutput(0, lambda _chunk: None, lambda: None)
        tasks = [
            asyncio.ensure_future(stdout.drain(sandbox.stdout)),
            asyncio.ensure_future(stderr.drain(sandbox.stderr)),
            asyncio.ensure_future(result.drain(sandbox.result)),
            asyncio.ensure_future(sandbox.send_job(b"")),
        ]
        try:
            await sandbox.started()
            end = await self._wait(sandbox)
            await asyncio.gather(*tasks)
        except BaseException:
            sandbox.stop(StopReason.CANCEL)
            with contextlib.suppress(Exception):
                await asyncio.shield(sandbox.wait())
            raise
        finally:
            for task in tasks:
                task.cancel()
        return stdout, stderr, end

    async def _wait(self, sandbox: Sandbox) -> SandboxExit:
        try:
            return await asyncio.wait_for(
                asyncio.shield(sandbox.wait()), self.limits.wall_time_ms / 1000 + WALL_GRACE_S
            )
        except TimeoutError:
            sandbox.stop(StopReason.WALL_TIME)
            return await sandbox.wait()

    def _check(
        self, step: Step, end: SandboxExit, stdout: CappedOutput, stderr: CappedOutput
    ) -> None:
        """Raises the failure `end` shows, in the tool's words where it has any."""
        if end.setup_error:
            raise SandboxFailure(f"the resolve sandbox could not start: {end.setup_error}")
        said = (stderr.output().data or stdout.output().data).decode(errors="replace").strip()
        program = Path(step.argv[0]).name
        if end.oom_killed:
            limit_mib = self.limits.memory_bytes // (1024 * 1024)
            raise DependencyFailure(f"{program} ran out of memory ({limit_mib} MiB)\n{said}")
        if end.stopped_for in (StopReason.WALL_TIME, StopReason.CPU_TIME):
            seconds = self.limits.wall_time_ms / 1000
            raise DependencyFailure(f"{program} did not finish within {seconds:g} s\n{said}")
        if end.stopped_for is StopReason.OUTPUT:
            raise DependencyFailure(f"{program} wrote more than {OUTPUT_CAP_BYTES} bytes")
        if end.exit_code != 0:
            status = f"signal {end.signal}" if end.signal else f"exit status {end.exit_code}"
            raise DependencyFailure(said or f"{program} failed ({status})")
