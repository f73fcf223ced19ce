"""How a conformance run is shown: a table for people, JSON for machines.

The table has one row per case and one column per language, so that a case that
passes in one language and fails in another stands out; the failures follow with
what was expected against what came back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gristmill.conformance.cases import Case
from gristmill.conformance.checks import decode, shown
from gristmill.conformance.results import CaseResult
from gristmill.v1 import runtime_pb2

__all__ = [
    "attack_summary",
    "coverage_lines",
    "describe_outcome",
    "print_coverage",
    "print_json",
    "print_table",
]

_HEAD_CHARS = 300
"""How much of stdout, stderr and the result a failure shows."""
_NOT_RUN = "\N{EN DASH}"


def attack_summary(results: Sequence[CaseResult]) -> dict[str, tuple[int, int]]:
    """Per language: attack cases tried, and how many of them the sandbox contained."""
    summary: dict[str, tuple[int, int]] = {}
    for result in results:
        if result.case.is_attack:
            tried, contained = summary.get(result.case.language, (0, 0))
            summary[result.case.language] = (tried + 1, contained + result.passed)
    return summary


def print_table(
    cases: Sequence[Case],
    results: Sequence[CaseResult],
    unavailable: Mapping[str, str],
    console: Console | None = None,
    backend: str = "",
) -> None:
    """The pass/FAIL grid of the selected `cases`, per-language totals, then each failure."""
    console = console or Console()
    languages = sorted({case.language for case in cases})
    names = list(dict.fromkeys(case.name for case in cases))
    by_key = {(r.case.name, r.case.language): r for r in results}

    title = "gristmill conformance" + (f" (sandbox: {backend})" if backend else "")
    table = Table(title=title)
    table.add_column("case")
    for language in languages:
        table.add_column(language, justify="center")
    for name in names:
        cells = [_cell(by_key.get((name, language))) for language in languages]
        table.add_row(name, *cells)
    table.add_section()
    totals = []
    for language in languages:
        ran = [r for r in results if r.case.language == language]
        passed = sum(r.passed for r in ran)
        style = "green" if ran and passed == len(ran) else "red" if ran else "dim"
        totals.append(Text(f"{passed}/{len(ran)}" if ran else _NOT_RUN, style=style))
    table.add_row(Text("passed", style="bold"), *totals)
    attacks = attack_summary(results)
    contained_cells = []
    for language in languages:
        tried, contained = attacks.get(language, (0, 0))
        style = "green" if tried and contained == tried else "red" if tried else "dim"
        contained_cells.append(Text(f"{contained}/{tried}" if tried else _NOT_RUN, style=style))
    table.add_row(Text("attacks contained", style="bold"), *contained_cells)
    console.print(table)

    for language, reason in sorted(unavailable.items()):
        if language in languages:
            console.print(Text(f"{language}: not run: {reason}", style="yellow"))
    for result in results:
        if not result.passed:
            _print_failure(console, result)


def coverage_lines(holes: Mapping[str, Sequence[str]]) -> list[str]:
    """The coverage matrix in words: per language, the cases it lacks, by name."""
    return [
        f"{language:10} " + (f"lacks {len(names)}: {', '.join(names)}" if names else "every case")
        for language, names in holes.items()
    ]


def print_coverage(holes: Mapping[str, Sequence[str]], console: Console | None = None) -> None:
    console = console or Console()
    console.print(Text("coverage (cases written for some language and not for this one)"))
    for line in coverage_lines(holes):
        console.print(Text(line, style="yellow" if "lacks" in line else "green"))


def _cell(result: CaseResult | None) -> Text:
    if result is None:
        return Text(_NOT_RUN, style="dim")
    return Text("pass", style="green") if result.passed else Text("FAIL", style="bold red")


def _print_failure(console: Console, result: CaseResult) -> None:
    case = result.case
    console.print()
    console.print(
        Text(f"FAIL {case.id}", style="bold red"),
        Text(f"({case.source.name}, {result.elapsed_ms:.0f} ms)", style="dim"),
    )
    for problem in result.problems:
        console.print(Text(f"  - {problem}"))
    outcome = result.outcome
    if outcome is None:
        return
    console.print(Text("  got:", style="bold"))
    for line in describe_outcome(outcome):
        console.print(Text(f"    {line}"))


def describe_outcome(outcome: runtime_pb2.Outcome) -> list[str]:
    """The parts of an outcome a person needs to see why a case failed."""
    lines = [
        f"verdict={runtime_pb2.Verdict.Name(outcome.verdict)} exit_code={outcome.exit_code} "
        f"signal={outcome.signal} sandbox={outcome.sandbox!r}",
    ]
    if outcome.detail:
        lines.append(f"detail: {outcome.detail}")
    if outcome.result_json:
        lines.append(f"result: {shown(outcome.result_json, _HEAD_CHARS)}")
    if outcome.HasField("error"):
        error = outcome.error
        lines.append(f"error: {error.name}: {shown(error.message, _HEAD_CHARS)}")
        lines.extend(f"  at {frame.file}:{frame.line} in {frame.function}" for frame in error.stack)
    for stream in ("stdout", "stderr"):
        output = getattr(outcome, stream)
        if output.data or output.truncated:
            truncated = ", truncated" if output.truncated else ""
            lines.append(
                f"{stream} ({len(output.data)} of {output.total_bytes} bytes{truncated}): "
                f"{shown(decode(output.data), _HEAD_CHARS)}"
            )
    return lines


def print_json(
    target: str,
    results: Sequence[CaseResult],
    unavailable: Mapping[str, str],
    backend: str = "",
) -> None:
    """One JSON document: each result with its outcome in protobuf's JSON mapping."""
    document: dict[str, Any] = {
        "target": target,
        "backend": backend,
        "attacks": {
            language: {"tried": tried, "contained": contained}
            for language, (tried, contained) in attack_summary(results).items()
        },
        "passed": bool(results) and all(r.passed for r in results),
        "unavailable": dict(unavailable),
        "totals": {},
        "results": [],
    }
    for result in results:
        language = result.case.language
        totals = document["totals"].setdefault(language, {"passed": 0, "ran": 0})
        totals["ran"] += 1
        totals["passed"] += result.passed
        document["results"].append(
            {
                "case": result.case.name,
                "language": language,
                "passed": result.passed,
                "problems": list(result.problems),
                "elapsed_ms": round(result.elapsed_ms, 1),
                "outcome": (
                    None if result.outcome is None else json_format.MessageToDict(result.outcome)
                ),
            }
        )
    print(json.dumps(document, indent=2, ensure_ascii=False))
