"""The conformance suite's runner: cases as data, run against any gristmill.v1 server.

suite   the shared cases (package data): *.toml, and README.md their schema
cases   load and validate the suite's files (and each language's) into typed cases
checks  compare an Outcome with a case's expectation
results a case's run (what came back, how it differs)
runner  send the cases over gRPC; `main` is `gristmill conformance`
report  the pass/FAIL table and the JSON form of a run
"""

from gristmill.conformance.cases import Case, CaseFileError, Expectation, load_cases
from gristmill.conformance.checks import check_outcome
from gristmill.conformance.results import CaseResult
from gristmill.conformance.runner import main, run_cases

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
