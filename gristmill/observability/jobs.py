"""A job as the operator sees it: its phases as spans, its end as one log line and metrics.

The job table makes one `JobWatch` per job it runs, at submission (in the calling
RPC's context: its tenant, its span) and tells it when the job left the queue, each
event of the job, and how the job ended. The base class watches nothing (a table
without telemetry); `ReportedJob` reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gristmill.config import ANONYMOUS
from gristmill.model import Job, JobEvent, Outcome, Verdict
from gristmill.observability import metrics
from gristmill.observability.tracing import JobTrace, Tracing

__all__ = ["JobWatch", "ReportedJob"]

log = logging.getLogger("gristmill.jobs")


class JobWatch:
    """Told what happens to one job; this one does nothing with it."""

    def admitted(self) -> None:
        """The job got its slot: its queue phase is over."""

    def event(self, event: JobEvent) -> None:
        """The job published `event` (a phase began, it started, it wrote output)."""

    def ended(self, task: asyncio.Task[Outcome]) -> None:
        """The job's run is over: its task holds the outcome or the service's failure."""


class ReportedJob(JobWatch):
    """Logs the job's end, counts it in metrics (when on), traces it (when on)."""

    def __init__(self, job: Job, count: bool, tracing: Tracing | None) -> None:
        self._job = job
        self._tenant = job.tenant or ANONYMOUS
        self._count = count
        self._submitted = time.monotonic()
        self._trace: JobTrace | None = tracing.job(job, self._tenant) if tracing else None

    def admitted(self) -> None:
        if self._trace is not None:
            self._trace.admitted()

    def event(self, event: JobEvent) -> None:
        if self._trace is not None:
            self._trace.event(event)

    def ended(self, task: asyncio.Task[Outcome]) -> None:
        error = asyncio.CancelledError() if task.cancelled() else task.exception()
        try:
            if error is not None:
                self._failed(error)
            else:
                self._finished(task.result())
        except Exception:
            # Reporting must never break the job table's bookkeeping, which follows.
            log.exception("reporting job %s failed", self._job.id)

    def _finished(self, outcome: Outcome) -> None:
        seconds = time.monotonic() - self._submitted
        if self._trace is not None:
            self._trace.finished(outcome)
        sandbox_error = outcome.verdict is Verdict.SANDBOX_ERROR
        level = logging.ERROR if sandbox_error else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "job finished", extra=self._line(outcome, seconds))
        if self._count:
            _count(self._job.language, self._tenant, outcome, seconds)

    def _failed(self, error: BaseException) -> None:
        if self._trace is not None:
            self._trace.failed(error)
        log.error(
            "job failed: the service's own error",
            exc_info=error,
            extra={
                "job_id": self._job.id,
                "tenant": self._tenant,
                "language": self._job.language,
                "cause": f"{type(error).__name__}: {error}",
            },
        )
        metrics.INTERNAL_ERRORS.labels(self._job.language).inc()

    def _line(self, outcome: Outcome, seconds: float) -> dict[str, Any]:
        """The job's log fields: what happened and how long each phase took; never its
        arguments, code, environment, output or error message (they are the user's)."""
        usage, phases = outcome.usage, outcome.usage.phases
        line: dict[str, Any] = {
            "job_id": self._job.id,
            "tenant": self._tenant,
            "language": self._job.language,
            "verdict": outcome.verdict.value,
            "sandbox": outcome.sandbox,
            "warm": outcome.warm_sandbox,
        }
        if outcome.environment is not None:
            line["env_cached"] = outcome.environment.cached
        if outcome.build is not None:
            line["build_cached"] = outcome.build.cached
        line.update(
            total_ms=round(seconds * 1000),
            queued_ms=phases.queued_ms,
            resolve_ms=phases.resolve_ms,
            install_ms=phases.install_ms,
            build_ms=phases.build_ms,
            prepare_ms=phases.prepare_ms,
            sandbox_setup_ms=phases.sandbox_setup_ms,
            run_ms=phases.run_ms,
            cpu_ms=usage.user_cpu_ms + usage.system_cpu_ms,
            peak_memory_bytes=usage.peak_memory_bytes,
            exit_code=outcome.exit_code,
        )
        if outcome.signal:
            line["signal"] = outcome.signal
        if outcome.error is not None:
            line["error_name"] = outcome.error.name
        if outcome.detail:
            line["detail"] = outcome.detail
        return line


def _sandbox_ran(outcome: Outcome) -> bool:
    phases = outcome.usage.phases
    return bool(phases.prepare_ms or phases.sandbox_setup_ms or phases.run_ms)


def _count(language: str, tenant: str, outcome: Outcome, seconds: float) -> None:
    metrics.JOBS.labels(language, outcome.verdict.value, tenant).inc()
    metrics.JOB_SECONDS.labels(language).observe(seconds)
    phases = outcome.usage.phases
    observed = {"queued": phases.queued_ms}
    if outcome.environment is not None:
        observed.update(resolve=phases.resolve_ms, install=phases.install_ms)
    if outcome.build is not None:
        observed["build"] = phases.build_ms
    start = "warm" if outcome.warm_sandbox else "cold"
    if outcome.verdict is Verdict.SANDBOX_ERROR:
        metrics.SANDBOX_SETUP_FAILURES.labels(language, start).inc()
    elif _sandbox_ran(outcome):
        metrics.JOB_STARTS.labels(language, start).inc()
        observed.update(
            prepare=phases.prepare_ms,
            sandbox_setup=phases.sandbox_setup_ms,
            run=phases.run_ms,
        )
    for phase, ms in observed.items():
        metrics.PHASE_SECONDS.labels(language, phase).observe(ms / 1000)
