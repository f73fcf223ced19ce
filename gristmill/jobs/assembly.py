"""A job's outcome, assembled once on the way out from what each phase learned.

The dependency phase leaves its lockfile, cache entry and timings here, the build phase
its key and timing; the outcome is then made once, by the run or by the phase that ended
the job early, instead of being copied again by each phase it passes on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gristmill.deps import PreparedEnvironment
from gristmill.model import BuildInfo, EnvironmentInfo, Lockfile, Outcome, Phases, Usage, Verdict

__all__ = ["Facts"]


@dataclass
class Facts:
    """What the phases before the run learned about one job."""

    lockfile: Lockfile | None = None
    environment: EnvironmentInfo | None = None
    build: BuildInfo | None = None
    # Phase timings by `Phases` field name (resolve_ms, install_ms, build_ms).
    phases: dict[str, int] = field(default_factory=dict)

    def environment_prepared(self, environment: PreparedEnvironment | None) -> None:
        if environment is not None:
            self.lockfile = environment.lockfile
            self.environment = EnvironmentInfo(cached=environment.cached, key=environment.key)
            self.phases.update(resolve_ms=environment.resolve_ms, install_ms=environment.install_ms)

    def built(self, build: BuildInfo, build_ms: int) -> None:
        self.build = build
        self.phases["build_ms"] = build_ms

    def phases_with(self, **run: int) -> Phases:
        """These timings beside the run's own (prepare_ms, sandbox_setup_ms, run_ms)."""
        return Phases(**self.phases, **run)

    def outcome(
        self, job_id: str, verdict: Verdict, usage: Usage | None = None, **fields: Any
    ) -> Outcome:
        """The outcome with these facts; `fields` are the run's (or the early end's)."""
        return Outcome(
            job_id,
            verdict,
            usage=usage or Usage(phases=self.phases_with()),
            lockfile=self.lockfile,
            environment=self.environment,
            build=self.build,
            **fields,
        )
