"""Runs one job: prepare its directory, start its sandbox, collect, decide.

The executor is the only place that knows the order of a job's phases; what a
language is comes from the registry, how a sandbox works from the backend, and
what the verdict is from `verdict.decide`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import (
    Sandbox,
    SandboxBackend,
    SandboxInfo,
    SandboxPlan,
    StopReason,
)
from gristmill.isolation.profile import BindMount
from gristmill.jobs import envelope
from gristmill.jobs.output import CappedOutput
from gristmill.jobs.verdict import decide
from gristmill.jobs.workspace import Workspace
from gristmill.languages import Registry, Runtime
from gristmill.languages.plugin import ArgumentsRejected
from gristmill.languages.spec import JAIL_JOB_DIR, JAIL_RUNTIME_DIR
from gristmill.model import (
    Job,
    JobError,
    JobEvent,
    Outcome,
    OutputEvent,
    PhaseEvent,
    Phases,
    StartedEvent,
    Usage,
    Verdict,
)

EventSink = Callable[[JobEvent], None]

RESULT_CAP_BYTES = 64 * 1024 * 1024
"""The largest result a job may return on its result channel."""
WALL_GRACE_S = 2.0
"""How long past its wall limit the service waits for the supervisor before stopping it itself."""


def _ms(ns: int) -> int:
    return ns // 1_000_000


class Executor:
    def __init__(self, registry: Registry, backend: SandboxBackend, work_dir: Path) -> None:
        self.registry = registry
        self.backend = backend
        self.work_dir = work_dir
        self.jobs_dir = work_dir / "jobs"
        self._runtime_dirs = work_dir / "runtimes"
        self._prepare_dirs()

    def _prepare_dirs(self) -> None:
        """Makes the work directory reachable by the jail's unprivileged uid.

        Language folders are copied here, because the repository may live where
        that uid cannot read (e.g. under /root).
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.chmod(0o755)
        for parent in self.work_dir.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise SandboxFailure(
                    f"work dir {self.work_dir}: {parent} is not searchable by other users, "
                    "so the jail's unprivileged user could not reach its job directory"
                )
        self.jobs_dir.mkdir(exist_ok=True, mode=0o755)
        shutil.rmtree(self._runtime_dirs, ignore_errors=True)
        for runtime in self.registry:
            shutil.copytree(
                runtime.spec.folder,
                self._runtime_dirs / runtime.name,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        for path in [self._runtime_dirs, *self._runtime_dirs.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

    def sandbox_info(self) -> SandboxInfo:
        return self.backend.info()

    def _plan(self, runtime: Runtime, job: Job, workspace: Workspace) -> SandboxPlan:
        runtime_mount = BindMount(str(self._runtime_dirs / runtime.name), JAIL_RUNTIME_DIR)
        profile = runtime.profile.with_mounts(runtime_mount)
        return SandboxPlan(
            profile=profile,
            argv=runtime.spec.run,
            env={**profile.env, **job.env},
            job_dir=workspace.job_dir,
            root_dir=workspace.root_dir,
            limits=job.limits,
        )

    async def run(
        self, job: Job, on_event: EventSink | None = None, cancel: asyncio.Event | None = None
    ) -> Outcome:
        """Runs `job` to its end and returns its outcome; never raises for what the job did.

        Setting `cancel` kills the job; the outcome is then CANCELLED.
        Raises `gristmill.errors.GristmillError` only for the service's own failures.
        """
        emit: EventSink = on_event or (lambda _event: None)
        runtime = self.registry.get(job.language)
        began = time.monotonic_ns()
        emit(PhaseEvent("prepare"))
        spec = runtime.spec
        try:
            message = runtime.plugin.job_message(job, f"{JAIL_JOB_DIR}/{spec.source_file}")
        except ArgumentsRejected as rejected:
            error = JobError("InvalidArguments", str(rejected))
            return Outcome(
                job.id, Verdict.INVALID_ARGUMENTS, error=error, sandbox=self.backend.name
            )
        workspace = await asyncio.to_thread(
            Workspace.create, self.jobs_dir, job, spec.source_file, *self._ids(runtime)
        )
        try:
            prepared = time.monotonic_ns()
            emit(PhaseEvent("sandbox_setup", self.backend.name))
            sandbox = await self.backend.start(self._plan(runtime, job, workspace))
            return await self._supervise(
                job, runtime, sandbox, message, emit, cancel, began, prepared
            )
        finally:
            await asyncio.to_thread(workspace.remove)

    @staticmethod
    def _ids(runtime: Runtime) -> tuple[int, int]:
        return runtime.profile.uid, runtime.profile.gid

    async def _supervise(
        self,
        job: Job,
        runtime: Runtime,
        sandbox: Sandbox,
        message: bytes,
        emit: EventSink,
        cancel: asyncio.Event | None,
        began: int,
        prepared: int,
    ) -> Outcome:
        cap = job.limits.output_bytes

        def overflow() -> None:
            sandbox.stop(StopReason.OUTPUT)

        stdout = CappedOutput(cap, lambda b: emit(OutputEvent("stdout", b)), overflow)
        stderr = CappedOutput(cap, lambda b: emit(OutputEvent("stderr", b)), overflow)
        result = CappedOutput(RESULT_CAP_BYTES, lambda _b: None, overflow)
        tasks = [
            asyncio.ensure_future(stdout.drain(sandbox.stdout)),
            asyncio.ensure_future(stderr.drain(sandbox.stderr)),
            asyncio.ensure_future(result.drain(sandbox.result)),
            asyncio.ensure_future(sandbox.send_job(message)),
        ]
        watcher = asyncio.ensure_future(self._watch_cancel(sandbox, cancel))
        try:
            pid = await sandbox.started()
            if pid:
                emit(PhaseEvent("run"))
                emit(StartedEvent(pid))
            try:
                end = await asyncio.wait_for(
                    asyncio.shield(sandbox.wait()), job.limits.wall_time_ms / 1000 + WALL_GRACE_S
                )
            except TimeoutError:
                sandbox.stop(StopReason.WALL_TIME)
                end = await sandbox.wait()
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
        decision = decide(
            end,
            envelope.parse(result.output().data),
            stdout.output(),
            stderr.output(),
            runtime.spec.result_fallback,
        )
        if result.overflowed:
            decision = decision.__class__(Verdict.OUTPUT_LIMIT, detail="the result was too large")
        return Outcome(
            job_id=job.id,
            verdict=decision.verdict,
            result_json=decision.result_json,
            error=decision.error,
            stdout=stdout.output(),
            stderr=stderr.output(),
            exit_code=end.exit_code,
            signal=end.signal,
            usage=Usage(
                wall_time_ms=_ms(end.run_ns),
                user_cpu_ms=_ms(end.user_cpu_ns),
                system_cpu_ms=_ms(end.system_cpu_ns),
                peak_memory_bytes=end.peak_memory_bytes,
                processes=max(end.peak_processes - runtime.profile.overhead_processes, 0),
                phases=Phases(
                    prepare_ms=_ms(prepared - began),
                    sandbox_setup_ms=_ms(end.setup_ns),
                    run_ms=_ms(end.run_ns),
                ),
            ),
            sandbox=self.backend.name,
            detail=decision.detail,
        )

    @staticmethod
    async def _watch_cancel(sandbox: Sandbox, cancel: asyncio.Event | None) -> None:
        if cancel is not None:
            await cancel.wait()
            sandbox.stop(StopReason.CANCEL)
