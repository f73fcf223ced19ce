"""The build phase: a job's code compiled once per distinct input, kept and shared read-only.

    BuildKey      everything that decides what a build produces, hashed canonically
    Builds        what the executor calls: the key, the compile step on a miss (in a
                  sandbox with no network), the output leased for as long as the job runs
    BuildFailure  the code did not compile; `str()` is the compiler's own message

The compile step is the language's `[build]` table (`languages.spec.BuildSpec`) plus
the files its plugin generates (`LanguagePlugin.build_files`). The outputs live in the
same kind of `EnvironmentCache` as dependency environments, under a root of their own:
one build per key under concurrency (across processes too), an atomic rename into
place, LRU eviction that never removes an output a job holds. A failed build is never
kept, nor one that left a device node, fifo or socket; what is kept is sealed like an
environment (the service's own, read-only to others, without setuid or setgid bits).

A `[build]` table may name a `prime` step: run once per toolchain (keyed by `PrimeKey`,
kept in the same cache) with nothing of any job in it, so what it leaves is trusted and
shared read-only with every build of the language (e.g. a compiler's cache of its
standard library). A job's build reads it but writes only to its own places.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gristmill.deps import EnvironmentCache, PreparedEnvironment
from gristmill.deps.cache import Unsealable
from gristmill.deps.key import canonical_digest, host_platform
from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import SandboxBackend, SandboxPlan
from gristmill.jobs.mounts import job_plan
from gristmill.jobs.workspace import Workspace
from gristmill.languages import Runtime
from gristmill.languages.spec import BuildSpec
from gristmill.model import Job, JobEvent, PhaseEvent
from gristmill.observability import metrics
from gristmill.steps.run import failure, run_step

__all__ = ["BuildFailure", "BuildKey", "Builds", "PreparedBuild", "PrimeKey", "SourceFile"]

SCHEMA_VERSION = 1
"""Bumped when what a build leaves, or how a run finds it, changes."""

EventSink = Callable[[JobEvent], None]
log = logging.getLogger(__name__)


class BuildFailure(Exception):
    """The job's code did not compile (or the compiler ran out of time or memory).

    Not a `GristmillError`: the executor turns it into a COMPILE_ERROR outcome whose
    error message is `str()`, the compiler's own words, never a stack trace of ours.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class SourceFile:
    """One file the compile step sees, by its path in /job and its content's hash."""

    path: str
    sha256: str
    executable: bool = False

    @classmethod
    def of(cls, path: str, content: bytes, executable: bool = False) -> SourceFile:
        return cls(path, hashlib.sha256(content).hexdigest(), executable)


@dataclass(frozen=True)
class BuildKey:
    language: str
    # The compiler, as the language's `version_command` prints it, e.g. "go1.22.1".
    toolchain_version: str
    # The compile step as declared: a changed flag or variable builds again.
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    # The job's code, its files and the plugin's generated files, sorted by path.
    sources: tuple[SourceFile, ...]
    # The language's folder: the wrapper it holds may be compiled into the output.
    runtime_sha256: str
    # The dependency environment compiled against, "" for none; its key covers the
    # lockfile's hash and the resolver that installed it.
    environment_key: str
    platform: str = field(default_factory=host_platform)
    schema_version: int = SCHEMA_VERSION

    def digest(self) -> str:
        return canonical_digest(self)


@dataclass(frozen=True)
class PrimeKey:
    """Everything that decides what a language's prime step leaves: no job's input."""

    language: str
    toolchain_version: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    runtime_sha256: str
    platform: str = field(default_factory=host_platform)
    schema_version: int = SCHEMA_VERSION

    def digest(self) -> str:
        return canonical_digest(self)


@dataclass(frozen=True)
class PreparedBuild:
    """A job's compiled output, leased for as long as the job runs."""

    # Host directory to mount read-only at JAIL_BUILD_DIR in the job's run sandbox.
    path: Path
    # False when this job compiled it.
    cached: bool
    key: str


def folder_sha256(folder: Path) -> str:
    """Hex SHA-256 of every file under `folder` (paths and contents), in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(f"{path.relative_to(folder)}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _sources(job: Job, source_file: str, generated: Mapping[str, bytes]) -> tuple[SourceFile, ...]:
    files = [
        SourceFile.of(source_file, job.code.encode()),
        *(SourceFile.of(f.path, f.content, f.executable) for f in job.files),
        *(SourceFile.of(path, content) for path, content in generated.items()),
    ]
    return tuple(sorted(files, key=lambda f: f.path))


@dataclass(frozen=True)
class _Compile:
    """One compile step's inputs, as `Builds.output` worked them out."""

    runtime: Runtime
    spec: BuildSpec
    job: Job
    generated: Mapping[str, bytes]
    environment: PreparedEnvironment | None
    key: str
    # What the language's prime step left, read-only; None without one.
    shared: Path | None = None


class Builds:
    """Compiles jobs of languages with a `[build]` table, through `cache`."""

    def __init__(
        self, backend: SandboxBackend, cache: EnvironmentCache, work_dir: Path, runtime_dirs: Path
    ) -> None:
        self.backend = backend
        self.cache = cache
        # Where each compile step's own /job and jail root are made and removed.
        self._runs_dir = work_dir / "builds"
        self._runs_dir.mkdir(exist_ok=True, mode=0o755)
        self._runtime_dirs = runtime_dirs
        self._runtime_hashes: dict[str, str] = {}

    def _runtime_sha256(self, language: str) -> str:
        """The hash of the language's folder, computed once: the copy never changes."""
        if language not in self._runtime_hashes:
            self._runtime_hashes[language] = folder_sha256(self._runtime_dirs / language)
        return self._runtime_hashes[language]

    def key(
        self,
        runtime: Runtime,
        spec: BuildSpec,
        job: Job,
        generated: Mapping[str, bytes],
        environment: PreparedEnvironment | None,
    ) -> BuildKey:
        """Everything that decides the job's build output (see `BuildKey`)."""
        return BuildKey(
            language=runtime.name,
            toolchain_version=runtime.toolchain_version,
            argv=spec.run,
            env=tuple(sorted(spec.env.items())),
            outputs=spec.outputs,
            sources=_sources(job, runtime.spec.source_file, generated),
            runtime_sha256=self._runtime_sha256(runtime.name),
            environment_key=environment.key if environment is not None else "",
        )

    @contextlib.asynccontextmanager
    async def output(
        self,
        runtime: Runtime,
        job: Job,
        environment: PreparedEnvironment | None,
        emit: EventSink,
    ) -> AsyncIterator[PreparedBuild | None]:
        """The job's build output, leased until the block ends; None for a language
        without a build step. Compiles it unless the cache has it.

        Raises `BuildFailure` with the compiler's message, `ArgumentsRejected` when the
        plugin cannot generate the job's files, `SandboxFailure` when no sandbox starts.
        """
        spec = runtime.spec.build
        if spec is None:
            yield None
            return
        generated = runtime.plugin.build_files(job)
        key = self.key(runtime, spec, job, generated, environment).digest()
        emit(PhaseEvent("build", key[:12]))

        async with contextlib.AsyncExitStack() as stack:
            shared = None
            if spec.prime:
                shared = await stack.enter_async_context(self._primed(runtime, spec, emit))
            what = _Compile(runtime, spec, job, generated, environment, key, shared)

            async def build(target: Path) -> None:
                with metrics.counted(metrics.BUILDS, runtime.name):
                    await self._compile(what, target, emit)

            try:
                lease = await stack.enter_async_context(self.cache.use(key, build))
            except Unsealable as refused:
                raise BuildFailure(str(refused), key) from refused
            yield PreparedBuild(lease.path, lease.cached, key)

    async def prime_all(self, runtimes: Iterable[Runtime]) -> None:
        """Runs every prime step `runtimes` have that the cache does not keep yet.

        One that fails is logged, not raised: the language's first build tries again
        (and its job ends INTERNAL if it fails again); the other languages still serve.
        """
        for runtime in runtimes:
            spec = runtime.spec.build
            if spec is None or not spec.prime:
                continue
            try:
                async with self._primed(runtime, spec, lambda _event: None):
                    pass
            except SandboxFailure as failed:
                log.warning("%s: the build's prime step failed at start: %s", runtime.name, failed)

    @contextlib.asynccontextmanager
    async def _primed(
        self, runtime: Runtime, spec: BuildSpec, emit: EventSink
    ) -> AsyncIterator[Path]:
        """The output of the language's prime step, leased; run first if not yet kept.

        Raises `SandboxFailure` when the step fails: it runs only the service's own code.
        """
        key = PrimeKey(
            language=runtime.name,
            toolchain_version=runtime.toolchain_version,
            argv=spec.prime,
            env=tuple(sorted(spec.env.items())),
            runtime_sha256=self._runtime_sha256(runtime.name),
        ).digest()

        async def prime(target: Path) -> None:
            profile = runtime.profile
            os.chown(target, profile.uid, profile.gid)
            workspace = await asyncio.to_thread(
                Workspace.empty, self._runs_dir, profile.uid, profile.gid
            )
            try:
                plan = job_plan(
                    runtime,
                    self._runtime_dirs / runtime.name,
                    workspace,
                    spec.prime,
                    spec.env,
                    spec.limits,
                    None,
                    target,
                    build_writable=True,
                )
                run = await run_step(
                    self.backend,
                    plan,
                    lambda line: emit(PhaseEvent("prime", line)),
                    spec.limits.output_bytes,
                )
            finally:
                await asyncio.to_thread(workspace.remove)
            if run.end.setup_error:
                raise SandboxFailure(f"the prime sandbox could not start: {run.end.setup_error}")
            if (why := failure(run, plan)) is not None:
                raise SandboxFailure(f"the {runtime.name} build's prime step failed: {why}")

        try:
            async with self.cache.use(key, prime) as lease:
                yield lease.path
        except Unsealable as refused:
            raise SandboxFailure(f"the {runtime.name} prime step's output: {refused}") from refused

    async def _compile(self, what: _Compile, target: Path, emit: EventSink) -> None:
        """Runs the compile step with `target` as its writable output directory."""
        job, spec, profile = what.job, what.spec, what.runtime.profile
        source_file = what.runtime.spec.source_file
        if clash := sorted({source_file, *(f.path for f in job.files)} & set(what.generated)):
            raise BuildFailure(f"the job's file {clash[0]!r} is one the build generates", what.key)
        os.chown(target, profile.uid, profile.gid)
        workspace = await asyncio.to_thread(
            Workspace.create,
            self._runs_dir,
            job,
            source_file,
            profile.uid,
            profile.gid,
            what.generated,
        )
        try:
            plan = self._plan(what, workspace, target)
            run = await run_step(
                self.backend,
                plan,
                lambda line: emit(PhaseEvent("build", line)),
                spec.limits.output_bytes,
            )
        finally:
            await asyncio.to_thread(workspace.remove)
        if run.end.setup_error:
            raise SandboxFailure(f"the build sandbox could not start: {run.end.setup_error}")
        if (why := failure(run, plan)) is not None:
            raise BuildFailure(why, what.key)
        if missing := [output for output in spec.outputs if not (target / output).exists()]:
            said = f"\n{run.said()}" if run.said() else ""
            raise BuildFailure(f"the build left no {missing[0]}{said}", what.key)

    def _plan(self, what: _Compile, workspace: Workspace, target: Path) -> SandboxPlan:
        runtime = what.runtime
        return job_plan(
            runtime,
            self._runtime_dirs / runtime.name,
            workspace,
            what.spec.run,
            what.spec.env,
            what.spec.limits,
            what.environment.path if what.environment else None,
            target,
            build_writable=True,
            shared_dir=what.shared,
        )
