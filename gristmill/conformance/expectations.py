"""What a conformance case expects of its outcome (`expect`, and per language
`expect_for`): read from the case's table into an `Expectation` the runner checks."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gristmill.conformance.fields import (
    CaseFileError,
    Where,
    only_keys,
    optional_bool,
    optional_int,
    optional_regex,
    optional_str,
    required_str,
    string_table,
)
from gristmill.v1 import runtime_pb2

__all__ = ["VERDICTS", "Expectation", "merge_expect", "parse_expect"]

VERDICTS = frozenset(name for name, number in runtime_pb2.Verdict.items() if number != 0)
"""Verdict names a case may expect: the contract's enum, never its zero value."""

_EXPECT_KEYS = frozenset(
    {
        "verdict",
        "verdict_in",
        "result",
        "result_json",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "error_name",
        "error_message",
        "error_line",
        "exit_code",
        "signal",
        "within_ms",
        "files",
    }
)


@dataclass(frozen=True)
class Expectation:
    """What the outcome must show; `None` leaves that part of the outcome unchecked."""

    # Any one of these verdicts passes (one, unless the kernel may answer several ways).
    verdicts: tuple[str, ...]
    # Compared as JSON values, exactly: 1 and 1.0 differ, and so do 1 and true.
    result_json: str | None = None
    # Searched (`re.search`) in the stream decoded as UTF-8; anchor with \A and \Z.
    stdout: re.Pattern[str] | None = None
    stderr: re.Pattern[str] | None = None
    stdout_truncated: bool | None = None
    stderr_truncated: bool | None = None
    error_name: str | None = None
    error_message: re.Pattern[str] | None = None
    # The line of the innermost stack frame, in the user's own file.
    error_line: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    # The whole Execute call, as the runner measures it, must answer within this.
    within_ms: int | None = None
    # Exactly these files came back (`Outcome.files`), by path, with this UTF-8 text.
    files: Mapping[str, str] | None = None


def merge_expect(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`expect` with one language's `expect_for` on top; a verdict replaces a verdict_in."""
    merged = dict(base)
    if "verdict" in override or "verdict_in" in override:
        merged.pop("verdict", None)
        merged.pop("verdict_in", None)
    merged.update(override)
    return merged


def parse_expect(table: dict[str, Any], where: Where) -> Expectation:
    only_keys(table, _EXPECT_KEYS, where.at("expect", label=": expect"))
    return Expectation(
        verdicts=_parse_verdicts(table, where),
        result_json=_parse_result(table, where),
        stdout=optional_regex(table, "stdout", where),
        stderr=optional_regex(table, "stderr", where),
        stdout_truncated=optional_bool(table, "stdout_truncated", where, prefix="expect."),
        stderr_truncated=optional_bool(table, "stderr_truncated", where, prefix="expect."),
        error_name=optional_str(table, "error_name", where, prefix="expect."),
        error_message=optional_regex(table, "error_message", where),
        error_line=optional_int(table, "error_line", where, minimum=1, prefix="expect."),
        exit_code=optional_int(table, "exit_code", where, prefix="expect."),
        signal=optional_int(table, "signal", where, minimum=0, prefix="expect."),
        within_ms=optional_int(table, "within_ms", where, minimum=1, prefix="expect."),
        files=string_table(table, "files", where.at("expect", label=": expect"))
        if "files" in table
        else None,
    )


def _parse_verdicts(table: dict[str, Any], where: Where) -> tuple[str, ...]:
    if ("verdict" in table) == ("verdict_in" in table):
        raise CaseFileError(f"{where}: give exactly one of expect.verdict, expect.verdict_in")
    if "verdict" in table:
        verdicts = [required_str(table, "verdict", where, prefix="expect.")]
    else:
        verdicts = table["verdict_in"]
        if (
            not isinstance(verdicts, list)
            or not verdicts
            or not all(isinstance(v, str) for v in verdicts)
        ):
            raise CaseFileError(f"{where}: expect.verdict_in must be a non-empty list of names")
    for verdict in verdicts:
        if verdict not in VERDICTS:
            raise CaseFileError(
                f"{where}: unknown verdict {verdict!r}; known: {', '.join(sorted(VERDICTS))}"
            )
    return tuple(verdicts)


def _parse_result(table: dict[str, Any], where: Where) -> str | None:
    """The expected result as JSON text, whether written as TOML or as JSON text."""
    if "result" in table and "result_json" in table:
        raise CaseFileError(f"{where}: give expect.result or expect.result_json, not both")
    if "result" in table:
        try:
            return json.dumps(table["result"], ensure_ascii=False)
        except TypeError as error:
            raise CaseFileError(f"{where}: expect.result has no JSON form: {error}") from error
    text = optional_str(table, "result_json", where, prefix="expect.")
    if text is not None:
        try:
            json.loads(text)
        except ValueError as error:
            raise CaseFileError(f"{where}: expect.result_json is not JSON: {error}") from error
    return text
