"""Runs one job: its environment, its build, its directory, its sandbox; collect, decide.

The executor is the only place that knows the order of a job's phases; what a
language is comes from the registry, its dependencies from `gristmill.deps`, its
compiled output from `build.Builds`, how a sandbox works from the backend, and what
the verdict is from `verdict.decide`. Its parts are built by `parts.compose` and handed
in; each phase leaves what it learned in an `assembly.Facts`, from which the outcome is
made once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gristmill.deps import (
    DependencyFailure,
    PreparedEnvironment,
)
from gristmill.isolation.backend import (
    Sandbox,
    SandboxInfo,
    StopReason,
)
from gristmill.isolation.layout import JAIL_JOB_DIR
from gristmill.jobs import context, envelope
from gristmill.jobs.assembly import Facts
from gristmill.jobs.build import BuildFailure, PreparedBuild
from gristmill.jobs.mounts import job_plan
from gristmill.jobs.parts import Parts
from gristmill.jobs.pool import Kind, Warm
from gristmill.jobs.verdict import Decision, decide
from gristmill.jobs.workspace import (
    Workspace,
    unmount_jobs_dir,
)
from gristmill.languages import Runtime
from gristmill.languages.plugin import ArgumentsRejected
from gristmill.model import (
    BuildInfo,
    Job,
    JobError,
    JobEvent,
    Outcome,
    OutputEvent,
    PhaseEvent,
    StartedEvent,
    Usage,
    Verdict,
)
from gristmill.steps.output import CappedOutput
from gristmill.steps.run import drive

EventSink = Callable[[JobEvent], None]
_T = TypeVar("_T")


def _ms(ns: int) -> int:
    return ns // 1_000_000


class _Cancelled(Exception):
    """The job was cancelled before its sandbox started."""


async def _unless_cancelled(awaitable: Awaitable[_T], cancel: asyncio.Event | None) -> _T:
    """`awaitable`'s value, or `_Cancelled` as soon as `cancel` is set (it is then stopped)."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(cancel.wait() if cancel else asyncio.Event().wait())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise _Cancelled
    return task.result()


_INLINE_FILES = 16
"""Jobs with more files than this have their workspace written on a thread."""

DEADLINE_MARGIN = 0.05
"""The share of the time left to a caller's deadline kept back for delivering the outcome..."""
DEADLINE_MARGIN_MIN_S = 0.3
"""... and at least this much: stopping the sandbox, reaping it and answering take a
few tens of milliseconds on a quiet machine and several times that on a loaded one."""


def within_deadline(job: Job) -> Job:
    """`job` with its wall limit cut to what is left before its caller's deadline.

    A little is kept back: a job stopped exactly at the deadline would leave no time to
    deliver its TIMEOUT outcome, and the caller would see DEADLINE_EXCEEDED instead.
    """
    if job.deadline is None:
        return job
    left_s = job.deadline - time.monotonic()
    left_ms = int((left_s - max(left_s * DEADLINE_MARGIN, DEADLINE_MARGIN_MIN_S)) * 1000)
    wall_time_ms = max(1, min(job.limits.wall_time_ms, left_ms))
    return dataclasses.replace(
        job, limits=dataclasses.replace(job.limits, wall_time_ms=wall_time_ms)
    )


class Executor:
    """Runs jobs with the parts `gristmill.jobs.parts.compose` built, which it owns."""

    def __init__(self, parts: Parts) -> None:
        self.registry = parts.registry
        self.backend = parts.backend
        self.work_dir = parts.work_dir
        self.jobs_dir = parts.jobs_dir
        self.runtime_dirs = parts.runtime_dirs
        self.offload = parts.offload
        self.deps = parts.deps
        self.builds = parts.builds
        self.pool = parts.pool
        self.caps = parts.caps
        self.network = parts.network
        # Workspaces being removed in the background after their job's outcome.
        self._cleanups: set[asyncio.Future[None]] = set()

    async def close(self) -> None:
        """Waits for the background clean-ups, then closes the sandbox backend."""
        await self.pool.close()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        self.offload.close()
        await self.backend.close()
        unmount_jobs_dir(self.jobs_dir)
        shutil.rmtree(self.runtime_dirs, ignore_errors=True)

    def sandbox_info(self) -> SandboxInfo:
        return self.backend.info()

    async def run(
        self, job: Job, on_event: EventSink | None = None, cancel: asyncio.Event | None = None
    ) -> Outcome:
        """Runs `job` to its end and returns its outcome; never raises for what the job did.

        Setting `cancel` kills the job; the outcome is then CANCELLED.
        Raises `gristmill.errors.GristmillError` only for the service's own failures.
        """
        emit: EventSink = on_event or (lambda _event: None)
        runtime = self.registry.get(job.language)
        try:
            source_path = f"{JAIL_JOB_DIR}/{runtime.spec.source_file}"
            message = await self.offload.plugin_call(
                runtime, "job_message", job.size_bytes, job, source_path
            )
            async with contextlib.AsyncExitStack() as stack:
                environment = await _unless_cancelled(
                    stack.enter_async_context(self.deps.environment(runtime, job, emit)), cancel
                )
                facts = Facts()
                facts.environment_prepared(environment)
                return await self._build_and_run(
                    job, runtime, message, environment, facts, emit, cancel
                )
        except ArgumentsRejected as rejected:
            error = JobError("InvalidArguments", str(rejected))
            return self._ended(job, Facts(), Verdict.INVALID_ARGUMENTS, error)
        except DependencyFailure as failure:
            error = JobError("DependencyError", str(failure))
            detail = "the dependencies could not be resolved or installed"
            return self._ended(job, Facts(), Verdict.DEPENDENCY_ERROR, error, detail)
        except _Cancelled:
            detail = "cancelled before it ran, while its dependencies or build were prepared"
            return self._ended(job, Facts(), Verdict.CANCELLED, None, detail)

    def _ended(
        self, job: Job, facts: Facts, verdict: Verdict, error: JobError | None, detail: str = ""
    ) -> Outcome:
        """The outcome of a job that ended before its sandbox ran."""
        return facts.outcome(job.id, verdict, error=error, sandbox=self.backend.name, detail=detail)

    async def _build_and_run(
        self,
        job: Job,
        runtime: Runtime,
        message: bytes,
        environment: PreparedEnvironment | None,
        facts: Facts,
        emit: EventSink,
        cancel: asyncio.Event | None,
    ) -> Outcome:
        """The build phase (for a language with one), then the run, the build leased till then.

        A compile failure is the job's: a COMPILE_ERROR outcome with the compiler's message.
        """
        began = time.monotonic_ns()
        async with contextlib.AsyncExitStack() as stack:
            try:
                build = await _unless_cancelled(
                    stack.enter_async_context(self.builds.output(runtime, job, environment, emit)),
                    cancel,
                )
            except BuildFailure as failure:
                facts.built(BuildInfo(False, failure.key), _ms(time.monotonic_ns() - began))
                error = JobError("CompileError", str(failure))
                return self._ended(
                    job, facts, Verdict.COMPILE_ERROR, error, "the code did not compile"
                )
            if build is not None:
                facts.built(BuildInfo(build.cached, build.key), _ms(time.monotonic_ns() - began))
            return await self._run_in_sandbox(
                job, runtime, message, environment, build, facts, emit, cancel
            )

    async def _run_in_sandbox(
        self,
        job: Job,
        runtime: Runtime,
        message: bytes,
        environment: PreparedEnvironment | None,
        build: PreparedBuild | None,
        facts: Facts,
        emit: EventSink,
        cancel: asyncio.Event | None,
    ) -> Outcome:
        """Runs the job in a warm sandbox when one fits and waits, else in a new one."""
        job = within_deadline(job)
        began = time.monotonic_ns()
        emit(PhaseEvent("prepare"))
        variables = context.variables(job)
        if runtime.spec.message_context:
            message = context.preamble(variables) + message
        # What the plugin provides to the run (e.g. a socket it serves), until it ends.
        async with runtime.plugin.attach(job) as attached:
            kind = Kind(
                runtime.name,
                environment.key if environment else "",
                build.key if build else "",
                job.limits.network,
            )
            warm = self.pool.take(kind) if self.pool.fits(job, runtime, bool(attached)) else None
            if warm is not None:
                outcome = await self._run_warm(
                    job, runtime, kind, warm, message, facts, emit, cancel, began
                )
                if outcome is not None:
                    return outcome
            uid, gid = self._ids(runtime)
            workspace = Workspace.empty(self.jobs_dir, uid, gid)
            try:
                await self._fill(workspace, job, runtime)
                prepared = time.monotonic_ns()
                emit(PhaseEvent("sandbox_setup", self.backend.name))
                plan = job_plan(
                    runtime,
                    self.runtime_dirs / runtime.name,
                    workspace,
                    runtime.spec.run,
                    {**job.env, **variables},
                    job.limits,
                    environment.path if environment else None,
                    build.path if build else None,
                    attached=attached,
                )
                if job.limits.network:
                    egress = await asyncio.to_thread(self.network.egress, job.network_allow)
                    plan = dataclasses.replace(plan, egress=egress)
                sandbox = await self.backend.start(plan)
                # Its set-up is over: the next job's sandbox starts while this one runs.
                self.pool.refill(kind, runtime)
                return await self._supervise(
                    job,
                    runtime,
                    sandbox,
                    workspace,
                    message,
                    facts,
                    emit,
                    cancel,
                    began,
                    prepared,
                    False,
                )
            finally:
                self._remove_later(workspace)

    async def _run_warm(
        self,
        job: Job,
        runtime: Runtime,
        kind: Kind,
        warm: Warm,
        message: bytes,
        facts: Facts,
        emit: EventSink,
        cancel: asyncio.Event | None,
        began: int,
    ) -> Outcome | None:
        """The job in a warm sandbox; None if that sandbox could not take it (it died
        while it waited, or already holds more memory than the job may use)."""
        try:
            await self._fill(warm.workspace, job, runtime)
        except BaseException:
            self.pool.discard(warm)
            raise
        prepared = time.monotonic_ns()
        emit(PhaseEvent("sandbox_setup", f"{self.backend.name}, warm"))
        if not await warm.sandbox.hand_over(job.limits, self._inline(job)):
            self.pool.discard(warm)
            return None
        # Its replacement starts while the job runs, not after: back to back, the next job
        # would otherwise come before it is ready.
        self.pool.refill(kind, runtime)
        try:
            return await self._supervise(
                job,
                runtime,
                warm.sandbox,
                warm.workspace,
                message,
                facts,
                emit,
                cancel,
                began,
                prepared,
                True,
            )
        finally:
            self._remove_later(warm.workspace)

    async def _fill(self, workspace: Workspace, job: Job, runtime: Runtime) -> None:
        uid, gid = self._ids(runtime)
        if job.output_files:
            caps = self.caps
            workspace.ask_files(job.output_files, caps.output_files, caps.output_files_bytes)
        if self._inline(job):
            workspace.fill(job, runtime.spec.source_file, uid, gid)
        else:
            await asyncio.to_thread(workspace.fill, job, runtime.spec.source_file, uid, gid)

    def _inline(self, job: Job) -> bool:
        """Whether the job's files are few and small: quicker written on the event loop
        than handed to a thread and back."""
        return job.size_bytes <= self.offload.inline_bytes and len(job.files) <= _INLINE_FILES

    def _remove_later(self, workspace: Workspace) -> None:
        """Off the outcome's path: nothing of the job runs any more, the files just go."""
        removal = asyncio.ensure_future(asyncio.to_thread(workspace.remove))
        self._cleanups.add(removal)
        removal.add_done_callback(self._cleanups.discard)

    @staticmethod
    def _ids(runtime: Runtime) -> tuple[int, int]:
        return runtime.profile.uid, runtime.profile.gid

    async def _supervise(
        self,
        job: Job,
        runtime: Runtime,
        sandbox: Sandbox,
        workspace: Workspace,
        message: bytes,
        facts: Facts,
        emit: EventSink,
        cancel: asyncio.Event | None,
        began: int,
        prepared: int,
        warm: bool,
    ) -> Outcome:
        cap = job.limits.output_bytes

        def overflow() -> None:
            sandbox.stop(StopReason.OUTPUT)

        def started(pid: int) -> None:
            if pid:
                emit(PhaseEvent("run"))
                emit(StartedEvent(pid))

        stdout = CappedOutput(cap, lambda b: emit(OutputEvent("stdout", b)), overflow)
        stderr = CappedOutput(cap, lambda b: emit(OutputEvent("stderr", b)), overflow)
        result = CappedOutput(self.caps.result_bytes, lambda _b: None, overflow)
        outputs = (stdout, stderr, result)
        end = await drive(sandbox, job.limits, message, outputs, started, cancel, job.stdin)
        channel = result.output().data
        decision = decide(
            end,
            await self.offload.call(len(channel), envelope.parse, channel),
            stdout.output(),
            stderr.output(),
            runtime.spec.result_fallback,
            job.limits.cpu_time_ms,
        )
        if result.overflowed:
            decision = Decision(Verdict.OUTPUT_LIMIT, detail="the result was too large")
        elif end.files_out_overflow and decision.verdict is Verdict.SUCCESS:
            detail = f"the output files were too many or too large: {end.files_out_overflow}"
            decision = Decision(Verdict.OUTPUT_LIMIT, detail=detail)
        files = await asyncio.to_thread(workspace.files_out) if job.output_files else ()
        return facts.outcome(
            job.id,
            decision.verdict,
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
                network_sent_bytes=end.network_sent_bytes,
                network_received_bytes=end.network_received_bytes,
                phases=facts.phases_with(
                    prepare_ms=_ms(prepared - began),
                    sandbox_setup_ms=_ms(end.setup_ns),
                    run_ms=_ms(end.run_ns),
                ),
            ),
            sandbox=self.backend.name,
            detail=decision.detail,
            warm_sandbox=warm,
            files=files,
        )
