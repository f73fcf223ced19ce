"""Compare one Outcome with a case's Expectation, and say in words what differs.

Pure functions over the contract's `Outcome` message, so that they can be tested
with hand-made outcomes and reused by any client of the contract.
"""

from __future__ import annotations

from typing import Any

from gristmill import strictjson
from gristmill.conformance.cases import Expectation
from gristmill.v1 import runtime_pb2

__all__ = ["check_outcome", "decode", "json_equal", "shown"]

_SHOWN_CHARS = 200
"""How much of a long value a problem description quotes, by default."""


def check_outcome(
    expect: Expectation, outcome: runtime_pb2.Outcome, elapsed_ms: float
) -> list[str]:
    """Every way `outcome` (answered after `elapsed_ms`) differs from `expect`; empty if none."""
    problems: list[str] = []
    verdict = runtime_pb2.Verdict.Name(outcome.verdict)
    if verdict not in expect.verdicts:
        problems.append(f"verdict: expected {' or '.join(expect.verdicts)}, got {verdict}")
    if expect.result_json is not None:
        problems.extend(_check_result(expect.result_json, outcome.result_json))
    for stream, pattern, truncated in (
        ("stdout", expect.stdout, expect.stdout_truncated),
        ("stderr", expect.stderr, expect.stderr_truncated),
    ):
        output = getattr(outcome, stream)
        text = decode(output.data)
        if pattern is not None and not pattern.search(text):
            problems.append(f"{stream}: expected /{pattern.pattern}/, got {shown(text)}")
        if truncated is not None and output.truncated != truncated:
            problems.append(
                f"{stream}.truncated: expected {truncated}, got {output.truncated} "
                f"({len(output.data)} bytes kept of {output.total_bytes})"
            )
    problems.extend(_check_error(expect, outcome))
    if expect.exit_code is not None and outcome.exit_code != expect.exit_code:
        problems.append(f"exit_code: expected {expect.exit_code}, got {outcome.exit_code}")
    if expect.signal is not None and outcome.signal != expect.signal:
        problems.append(f"signal: expected {expect.signal}, got {outcome.signal}")
    if expect.files is not None:
        got = {f.path: decode(f.content) for f in outcome.files}
        if got != dict(expect.files):
            problems.append(f"files: expected {dict(expect.files)}, got {shown(repr(got))}")
    if expect.within_ms is not None and elapsed_ms > expect.within_ms:
        problems.append(f"answered after {elapsed_ms:.0f} ms, expected within {expect.within_ms}")
    return problems


def _check_result(expected_json: str, got_json: str) -> list[str]:
    if not got_json:
        return [f"result: expected {shown(expected_json)}, got no result_json"]
    try:
        got = strictjson.loads(got_json)
    except ValueError as error:
        return [
            f"result: expected {shown(expected_json)}, got invalid JSON ({error}): "
            f"{shown(got_json)}"
        ]
    if not json_equal(strictjson.loads(expected_json), got):
        return [f"result: expected {shown(expected_json)}, got {shown(got_json)}"]
    return []


def _check_error(expect: Expectation, outcome: runtime_pb2.Outcome) -> list[str]:
    wants_error = (
        expect.error_name is not None
        or expect.error_message is not None
        or expect.error_line is not None
    )
    if not wants_error:
        return []
    if not outcome.HasField("error"):
        return ["error: expected one, got none"]
    error = outcome.error
    problems = []
    if expect.error_name is not None and error.name != expect.error_name:
        problems.append(f"error.name: expected {expect.error_name!r}, got {error.name!r}")
    if expect.error_message is not None and not expect.error_message.search(error.message):
        problems.append(
            f"error.message: expected /{expect.error_message.pattern}/, got {shown(error.message)}"
        )
    if expect.error_line is not None:
        if not error.stack:
            problems.append(f"error.stack: expected line {expect.error_line}, got no frames")
        elif error.stack[-1].line != expect.error_line:
            frame = error.stack[-1]
            problems.append(
                f"error line: expected {expect.error_line} in the innermost frame, "
                f"got {frame.file}:{frame.line} ({frame.function})"
            )
    return problems


def json_equal(left: Any, right: Any) -> bool:
    """Equality of parsed JSON values that Python's `==` blurs: 1, 1.0 and true all differ."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    return bool(left == right)


def decode(data: bytes) -> str:
    """A stream's bytes as text; bytes that are not UTF-8 show as U+FFFD."""
    return data.decode("utf-8", errors="replace")


def shown(text: str, limit: int = _SHOWN_CHARS) -> str:
    """`text` quoted for a report, cut after `limit` characters."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"
