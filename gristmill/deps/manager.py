"""The dependency phase of a job, and the Resolve RPC: find, lock, install once, lease.

The executor asks `environment()` for a job's environment between reading the job
and starting its sandbox; the Resolve RPC asks `resolve()`. Both go through the
language's plugin for what the code needs and how to lock and install it, through
`ToolRunner` for running that in a sandbox, and through `EnvironmentCache` so that
an environment is built once and then shared read-only by every job that needs it.

Tenants share all of it while no package's code runs in a step: the steps then write
only what the registry serves. With `deps.allow_source_builds` on, a package's build
code runs in the resolve and install steps with the download cache writable, and could
rewrite what later steps install from it: each tenant then has a partition of its own
(`_partition`), a download cache, environments and remembered resolutions that no other
tenant's steps write or jobs read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gristmill.config import DependencyConfig
from gristmill.deps.cache import EnvironmentCache, Unsealable
from gristmill.deps.key import EnvironmentKey
from gristmill.deps.resolutions import ResolutionKey, Resolutions
from gristmill.deps.sandboxed import ToolPaths, ToolRunner
from gristmill.errors import LanguageUnavailable
from gristmill.isolation.backend import SandboxBackend
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.registry import Runtime
from gristmill.languages.resolver import Resolver, ToolContext
from gristmill.model import Dependency, Job, JobEvent, Lockfile, PhaseEvent, Resolution
from gristmill.observability import metrics
from gristmill.offload import Offload

__all__ = ["DependencyManager", "PreparedEnvironment"]

EventSink = Callable[[JobEvent], None]


@dataclass(frozen=True)
class PreparedEnvironment:
    """A job's installed dependencies, leased for as long as the job runs."""

    # Host directory to mount read-only into the job's sandbox.
    path: Path
    cached: bool
    key: str
    lockfile: Lockfile
    resolve_ms: int
    install_ms: int


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def _summary(dependencies: Sequence[Dependency]) -> str:
    return ", ".join(
        f"{d.requirement} ({d.where})" if d.where else d.requirement for d in dependencies
    )


def _find_program(name: str) -> Path:
    """A resolver's program on this host: beside the service's interpreter, else on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        raise LanguageUnavailable(f"the dependency tool {name!r} is not installed")
    return Path(found)


class DependencyManager:
    def __init__(
        self,
        backend: SandboxBackend,
        work_dir: Path,
        config: DependencyConfig,
        offload: Offload,
    ) -> None:
        self.config = config
        self._offload = offload
        deps_dir = config.cache_dir or work_dir / "deps"
        # Where the caches live: environments here, and other built things beside them.
        self.root = deps_dir
        deps_dir.mkdir(parents=True, exist_ok=True)
        # Searchable, not listable: the jail's user reaches only the paths it is given.
        deps_dir.chmod(0o711)
        self.cache = EnvironmentCache(
            deps_dir / "environments", config.cache_max_bytes, "deps.cache_max_bytes"
        )
        self._tool_cache_root = deps_dir / "tool-cache"
        self._tools_dir = work_dir / "tools"
        self._runs_dir = work_dir / "resolve"
        for directory, mode in (
            (self._tool_cache_root, 0o711),
            (self._tools_dir, 0o755),
            (self._runs_dir, 0o755),
        ):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(mode)
        self._backend = backend
        self._installing = asyncio.Lock()
        # By resolver and partition (`_partition`).
        self._runners: dict[tuple[str, str], ToolRunner] = {}
        self._versions: dict[str, str] = {}
        self._resolutions = Resolutions(config.resolution_ttl_s)

    def _context(self, runtime: Runtime) -> ToolContext:
        index_urls = (self.config.index_url,) if self.config.index_url else ()
        return ToolContext(
            runtime.toolchain_version,
            index_urls,
            self.config.system_certs,
            allow_source_builds=self.config.allow_source_builds,
        )

    def _partition(self, tenant: str) -> str:
        """Whose caches a step of `tenant`'s uses: "" (everyone's) unless packages may be
        built from source, whose build code a tenant's requirements choose; then the
        tenant's own, by a hash of its name (a name is no path)."""
        if not self.config.allow_source_builds:
            return ""
        return hashlib.sha256(tenant.encode()).hexdigest()[:32]

    def _install(self, resolver: Resolver) -> None:
        """Makes the resolver runnable in a sandbox: its programs copied where the sandbox's
        user can read them (the originals may live under a 0700 home); its version goes
        into `_versions`."""
        programs = self._tools_dir / resolver.name
        programs.mkdir(exist_ok=True, mode=0o755)
        for name in resolver.programs:
            staging = programs / f".{name}.new"
            shutil.copy2(_find_program(name), staging)
            staging.chmod(0o755)
            staging.rename(programs / name)
        # A resolver without host programs (a script its steps bring, run by an
        # interpreter of the sandbox's /usr) is given the directory instead.
        first = programs / resolver.programs[0] if resolver.programs else programs
        argv = resolver.version_argv(str(first))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
        self._versions[resolver.name] = done.stdout.strip()

    def _runner(self, resolver: Resolver, partition: str, uid: int, gid: int) -> ToolRunner:
        """The resolver's runner for `partition`, its download cache owned by the sandbox's
        user: `tool-cache/<resolver>`, or `tool-cache/tenants/<partition>/<resolver>`."""
        parent = self._tool_cache_root
        if partition:
            parent = parent / "tenants" / partition
            for directory in (parent.parent, parent):
                directory.mkdir(mode=0o711, exist_ok=True)
        cache_dir = parent / resolver.name
        # What a server that died while emptying the download cache left behind.
        for leftover in parent.glob(f"{resolver.name}.*.old"):
            shutil.rmtree(leftover, ignore_errors=True)
        cache_dir.mkdir(exist_ok=True)
        os.chown(cache_dir, uid, gid)
        cache_dir.chmod(0o700)
        return ToolRunner(
            self._backend,
            ToolPaths(self._tools_dir / resolver.name, cache_dir, self._runs_dir),
            self.config.limits(),
            self.config.tool_cache_max_bytes,
            self.config.egress,
        )

    async def _prepared_runner(
        self, runtime: Runtime, resolver: Resolver, partition: str
    ) -> tuple[ToolRunner, str]:
        """The resolver's runner for `partition` and its version, set up on first use."""
        async with self._installing:
            if resolver.name not in self._versions:
                await asyncio.to_thread(self._install, resolver)
            if (resolver.name, partition) not in self._runners:
                uid, gid = runtime.profile.uid, runtime.profile.gid
                runner = await asyncio.to_thread(self._runner, resolver, partition, uid, gid)
                self._runners[resolver.name, partition] = runner
        return self._runners[resolver.name, partition], self._versions[resolver.name]

    async def resolve(
        self, runtime: Runtime, code: str, files: Mapping[str, bytes], tenant: str = ""
    ) -> Resolution:
        """What `code` needs and its lockfile, without running it (the Resolve RPC);
        `files` are the job's other files, by relative path; `tenant` the caller's."""
        resolver = runtime.plugin.resolver()
        size = len(code) + sum(len(path) + len(content) for path, content in files.items())
        dependencies = await self._offload.plugin_call(
            runtime, "job_dependencies", size, code, dict(files)
        )
        if resolver is None or not dependencies:
            return Resolution(dependencies, None)
        partition = self._partition(tenant)
        lockfile = await self._lock(runtime, resolver, dependencies, partition, lambda _event: None)
        return Resolution(dependencies, lockfile)

    async def _lock(
        self,
        runtime: Runtime,
        resolver: Resolver,
        dependencies: Sequence[Dependency],
        partition: str,
        emit: EventSink,
    ) -> Lockfile:
        emit(PhaseEvent("resolve", _summary(dependencies)))
        runner, version = await self._prepared_runner(runtime, resolver, partition)
        context = self._context(runtime)
        key = ResolutionKey(
            language=runtime.name,
            toolchain_version=runtime.toolchain_version,
            resolver=resolver.name,
            resolver_version=version,
            index_urls=context.index_urls,
            allow_source_builds=context.allow_source_builds,
            requirements=tuple(sorted(d.requirement for d in dependencies)),
            partition=partition,
        )

        async def lock() -> Lockfile:
            step = resolver.lock(dependencies, context)
            with metrics.counted(metrics.RESOLVES, runtime.name):
                content = await runner.run(
                    step, runtime.profile, lambda line: emit(PhaseEvent("resolve", line))
                )
            if content is None:
                raise DependencyFailure(f"{resolver.name} produced no lockfile")
            return Lockfile(runtime.name, resolver.lock_format, content)

        lockfile, remembered = await self._resolutions.get(key, lock)
        if remembered:
            emit(
                PhaseEvent(
                    "resolve", f"resolved within the last {self.config.resolution_ttl_s:g} s"
                )
            )
        return lockfile

    @contextlib.asynccontextmanager
    async def environment(
        self, runtime: Runtime, job: Job, emit: EventSink
    ) -> AsyncIterator[PreparedEnvironment | None]:
        """The job's environment, leased until the block ends; None when it needs none.

        Resolves first unless the job brings a lockfile; installs unless the cache has
        the environment. Raises `DependencyFailure` with the tool's message.
        """
        resolver = runtime.plugin.resolver()
        began = time.monotonic()
        lockfile = job.lockfile
        partition = self._partition(job.tenant)
        if resolver is None:
            yield None
            return
        if lockfile is None:
            files = {f.path: f.content for f in job.files}
            dependencies = await self._offload.plugin_call(
                runtime, "job_dependencies", job.size_bytes, job.code, files
            )
            if not dependencies:
                yield None
                return
            lockfile = await self._lock(runtime, resolver, dependencies, partition, emit)
        resolve_ms = _ms_since(began) if job.lockfile is None else 0
        runner, version = await self._prepared_runner(runtime, resolver, partition)
        context = self._context(runtime)
        key = EnvironmentKey(
            language=runtime.name,
            toolchain_version=runtime.toolchain_version,
            resolver=resolver.name,
            resolver_version=version,
            lockfile_sha256=lockfile.sha256,
            index_urls=context.index_urls,
            partition=partition,
        ).digest()
        step = resolver.install(lockfile, context)

        async def build(target: Path) -> None:
            emit(PhaseEvent("install", f"{lockfile.format} {lockfile.sha256[:12]}"))
            os.chown(target, runtime.profile.uid, runtime.profile.gid)
            await runner.run(
                step, runtime.profile, lambda line: emit(PhaseEvent("install", line)), target
            )

        installing = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            try:
                lease = await stack.enter_async_context(self.cache.use(key, build))
            except Unsealable as refused:
                raise DependencyFailure(str(refused)) from refused
            yield PreparedEnvironment(
                lease.path, lease.cached, key, lockfile, resolve_ms, _ms_since(installing)
            )
