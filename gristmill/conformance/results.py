"""A case's run, as the runner makes it and the report shows it (a module of its own, so
that neither needs the other)."""

from __future__ import annotations

from dataclasses import dataclass

from gristmill.conformance.cases import Case
from gristmill.v1 import runtime_pb2

__all__ = ["CaseResult"]


@dataclass(frozen=True)
class CaseResult:
    """One case's run: what came back and every way it differs from the expectation."""

    case: Case
    problems: tuple[str, ...]
    outcome: runtime_pb2.Outcome | None
    elapsed_ms: float

    @property
    def passed(self) -> bool:
        return not self.problems
