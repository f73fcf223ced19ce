"""The conformance suite's runner: cases as data, run against any gristmill.v1 server.

cases   load and validate tests/conformance/*.toml into typed cases
checks  compare an Outcome with a case's expectation
runner  send the cases over gRPC; `main` is `gristmill conformance`
report  the pass/FAIL table and the JSON form of a run
"""

from gristmill.conformance.cases import Case, CaseFileError, Expectation, load_cases
from gristmill.conformance.checks import check_outcome
from gristmill.conformance.runner import CaseResult, main, run_cases

__all__ = [
    "Case",
    "CaseFileError",
    "CaseResult",
    "Expectation",
    "check_outcome",
    "load_cases",
    "main",
    "run_cases",
]
