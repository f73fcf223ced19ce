"""Runs a resolver's step in a sandbox of its own: registries only, writes only where it must.

The same backend that runs jobs runs the resolver, under the language's profile plus
three mounts: the resolver's programs (read-only), its download cache (writable,
shared by every resolve) and, for an install, the environment being built (writable).
Its limits are the service's `deps` settings, never a job's; it gets the network
because it must reach the registries, and nothing of the service's environment.

Its network is a namespace of its own (`gristmill.isolation.netns`), like a network-on
job's, whose egress policy lets it reach the configured registries only
(`deps.registries`, plus `deps.index_url`'s host): never the host, its loopback (the
service's own gRPC port) or the local network. Beyond that, nothing a job chose runs
or is fetched there:

- no job code runs in it, and no package's either: the resolver takes wheels only
  (`deps.allow_source_builds` off, the default), so no `setup.py` or build backend
  runs, and installing a wheel runs none of its code;
- the resolver talks only to the configured index (`deps.index_url`, else its
  default): requirements and lockfiles naming a URL, a path or an index option are
  refused before any step starts (`runtimes/python/dependencies.py`,
  `gristmill.languages.lockfiles`), and the resolver runs with `--no-config`.

With source builds allowed, a package's build code runs here with that network and
the download cache writable: each tenant then has a download cache of its own
(`DependencyManager._partition`), so that what it writes there reaches only that
tenant's later steps.

A step may ask for a follow-up that runs package code (`Step.then_offline`, e.g. warming
a cache inside the environment): that one runs in a sandbox of its own with no network
and without the download cache, so the code reaches only the environment being built.

The download cache has a budget of its own (`deps.tool_cache_max_bytes`): past it,
it is emptied after a step, once no other step (of any server sharing it) is using
it; it only holds what the index serves, so emptying it costs downloads, nothing else.
A step that makes it grow by more than that budget while it runs is stopped (a
download or an unpacking without bound must not fill the disk), as is one that writes
more into the environment it builds than the environments' budget
(`EnvironmentCache`): both are `DependencyFailure`s naming the setting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gristmill.deps.cache import OverBudget, tree_size, within_budget
from gristmill.deps.locks import flock, open_lock, try_flock
from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import SandboxBackend, SandboxPlan
from gristmill.isolation.egress import EgressPolicy
from gristmill.isolation.layout import JAIL_BUILD_DIR, JAIL_TOOL_CACHE_DIR, JAIL_TOOLS_DIR
from gristmill.isolation.profile import BindMount, SandboxProfile
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.resolver import Step
from gristmill.model import Limits
from gristmill.steps.paths import safe_relative_path
from gristmill.steps.run import LineSink, StepRun, failure, run_step

__all__ = ["ToolPaths", "ToolRunner", "trim_cache"]

log = logging.getLogger(__name__)

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

    @property
    def cache_lock(self) -> Path:
        """Held shared by every step using `cache_dir`, exclusively to empty it."""
        return self.cache_dir.with_name(f"{self.cache_dir.name}.lock")


def trim_cache(paths: ToolPaths, max_bytes: int) -> bool:
    """Empties the download cache if it is past `max_bytes` and no step is using it;
    True if it did. (A cache always in use waits for a quiet moment.)"""
    cache_dir = paths.cache_dir
    if tree_size(cache_dir) <= max_bytes:
        return False
    lock_fd = open_lock(paths.cache_lock)
    try:
        if not try_flock(lock_fd, fcntl.LOCK_EX):
            return False
        owner = cache_dir.stat()
        doomed = cache_dir.with_name(f"{cache_dir.name}.{uuid.uuid4().hex}.old")
        cache_dir.rename(doomed)
        cache_dir.mkdir(mode=0o700)
        os.chown(cache_dir, owner.st_uid, owner.st_gid)
    finally:
        os.close(lock_fd)
    shutil.rmtree(doomed, ignore_errors=True)
    log.info("emptied the download cache %s: past %d bytes", cache_dir, max_bytes)
    return True


class ToolRunner:
    def __init__(
        self,
        backend: SandboxBackend,
        paths: ToolPaths,
        limits: Limits,
        cache_max_bytes: int,
        egress: Callable[[], EgressPolicy] | None = None,
    ) -> None:
        self.backend = backend
        self.paths = paths
        self.limits = dataclasses.replace(limits, network=True)
        self.cache_max_bytes = cache_max_bytes
        # Where a step may connect: the registries (`DependencyConfig.egress`); None: the
        # default policy.
        self.egress = egress

    async def run(
        self,
        step: Step,
        profile: SandboxProfile,
        on_line: LineSink,
        build_dir: Path | None = None,
    ) -> str | None:
        """Runs `step` (then its `then_offline` step, if any); returns its stdout when that
        is its result, else None.

        Raises `DependencyFailure` with the tool's own message when it fails.
        """
        base = self.paths.work_dir / uuid.uuid4().hex
        lock_fd = open_lock(self.paths.cache_lock)
        try:
            await flock(lock_fd, fcntl.LOCK_SH)
            await asyncio.to_thread(self._prepare, base, step, profile)
            egress = await asyncio.to_thread(self.egress) if self.egress else None
            plan = dataclasses.replace(self._plan(step, profile, base, build_dir), egress=egress)
            running = run_step(
                self.backend, plan, on_line, OUTPUT_CAP_BYTES, not step.stdout_is_result
            )
            try:
                run = await within_budget(
                    running,
                    self.paths.cache_dir,
                    self.cache_max_bytes,
                    "the step's downloads",
                    "deps.tool_cache_max_bytes",
                )
            except OverBudget as refused:
                raise DependencyFailure(str(refused)) from refused
            self._check(plan, run)
        finally:
            os.close(lock_fd)
            await asyncio.to_thread(shutil.rmtree, base, True)
            await asyncio.to_thread(trim_cache, self.paths, self.cache_max_bytes)
        if step.then_offline is not None:
            await self._run_offline(step.then_offline, profile, on_line, build_dir)
        return run.stdout.data.decode() if step.stdout_is_result else None

    async def _run_offline(
        self, step: Step, profile: SandboxProfile, on_line: LineSink, build_dir: Path | None
    ) -> None:
        """A step without network and without the download cache (`Step.then_offline`)."""
        base = self.paths.work_dir / uuid.uuid4().hex
        try:
            await asyncio.to_thread(self._prepare, base, step, profile)
            plan = self._plan(step, profile, base, build_dir, offline=True)
            self._check(plan, await run_step(self.backend, plan, on_line, OUTPUT_CAP_BYTES))
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
        self,
        step: Step,
        profile: SandboxProfile,
        base: Path,
        build_dir: Path | None,
        offline: bool = False,
    ) -> SandboxPlan:
        mounts = [BindMount(str(self.paths.tools_dir), JAIL_TOOLS_DIR)]
        if not offline:
            mounts.append(BindMount(str(self.paths.cache_dir), JAIL_TOOL_CACHE_DIR, writable=True))
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
            limits=dataclasses.replace(self.limits, network=False) if offline else self.limits,
        )

    def _check(self, plan: SandboxPlan, run: StepRun) -> None:
        """Raises the failure `run` shows, in the tool's words where it has any."""
        if run.end.setup_error:
            raise SandboxFailure(f"the resolve sandbox could not start: {run.end.setup_error}")
        if (why := failure(run, plan)) is not None:
            raise DependencyFailure(why)
