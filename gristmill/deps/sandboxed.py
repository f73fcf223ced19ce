"""Runs a resolver's step in a sandbox of its own: network on, writes only where it must.

The same backend that runs jobs runs the resolver, under the language's profile plus
three mounts: the resolver's programs (read-only), its download cache (writable,
shared by every resolve) and, for an install, the environment being built (writable).
Its limits are the service's `deps` settings, never a job's; it gets the network
because it must reach the registries, and nothing of the service's environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from gristmill.deps.errors import DependencyFailure
from gristmill.deps.tool import JAIL_TOOL_CACHE_DIR, JAIL_TOOLS_DIR, Step
from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import SandboxBackend, SandboxPlan
from gristmill.isolation.profile import BindMount, SandboxProfile
from gristmill.jobs.step import LineSink, StepRun, failure, run_step
from gristmill.jobs.workspace import safe_relative_path
from gristmill.languages.spec import JAIL_BUILD_DIR
from gristmill.model import Limits

__all__ = ["ToolRunner"]

OUTPUT_CAP_BYTES = 16 * 1024 * 1024
"""What is kept of a step's stdout and stderr: a lockfile with hashes, or the error."""
FILE_SIZE_BYTES = 2 * 1024 * 1024 * 1024
"""Largest file a step may write: wheels of scientific packages run to hundreds of MiB."""
TMPFS_BYTES = 256 * 1024 * 1024
"""The step's /tmp, where source builds unpack; it counts against its memory limit."""


@dataclass(frozen=True)
class ToolPaths:
    """Host directories the runner mounts and works in."""

    # The resolver's programs, readable by the sandbox's user.
    tools_dir: Path
    # The resolver's download cache, owned by the sandbox's user.
    cache_dir: Path
    # Where each step's own /job and root directories are made and removed.
    work_dir: Path


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
            run = await run_step(
                self.backend, plan, on_line, OUTPUT_CAP_BYTES, not step.stdout_is_result
            )
            self._check(plan, run)
            return run.stdout.data.decode() if step.stdout_is_result else None
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

    def _check(self, plan: SandboxPlan, run: StepRun) -> None:
        """Raises the failure `run` shows, in the tool's words where it has any."""
        if run.end.setup_error:
            raise SandboxFailure(f"the resolve sandbox could not start: {run.end.setup_error}")
        if (why := failure(run, plan)) is not None:
            raise DependencyFailure(why)
