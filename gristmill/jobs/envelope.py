"""Reads what a wrapper wrote on the result channel (fd 3): the one job protocol.

Every language's wrapper writes at most one JSON object, one of:

    {"result": <any JSON value>}
    {"result_text": "<text>"}   the text is the result if it is JSON, else a string
    {"error": {"name": ..., "message": ..., "stack": [{file, line, function, text}]},
     "verdict": "ERROR" | "INVALID_ARGUMENTS"}

and nothing else. The protocol is described for wrapper authors in runtimes/PROTOCOL.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gristmill.model import JobError, StackFrame, Verdict

_ERROR_VERDICTS = {"ERROR": Verdict.ERROR, "INVALID_ARGUMENTS": Verdict.INVALID_ARGUMENTS}


@dataclass(frozen=True)
class Envelope:
    """A decoded result channel: a result, an error, or neither (nothing was written)."""

    result_json: str | None = None
    error: JobError | None = None
    error_verdict: Verdict = Verdict.ERROR
    # Set when the channel held something that is not the protocol.
    malformed: str = ""


def text_to_json(text: str) -> str:
    """A result given as text: kept when it is JSON, else made a JSON string."""
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text)
    return text.strip()


def _error(data: dict[str, Any]) -> JobError:
    frames = data.get("stack") or []
    stack = tuple(
        StackFrame(
            file=str(f.get("file", "")),
            line=int(f.get("line", 0)),
            function=str(f.get("function", "")),
            text=str(f.get("text", "")),
        )
        for f in frames
        if isinstance(f, dict)
    )
    return JobError(str(data.get("name", "Error")), str(data.get("message", "")), stack)


def parse(raw: bytes) -> Envelope:
    if not raw.strip():
        return Envelope()
    try:
        message = json.loads(raw)
    except ValueError as error:
        return Envelope(malformed=f"the result channel is not JSON: {error}")
    if not isinstance(message, dict):
        return Envelope(malformed="the result channel must hold a JSON object")
    if "result" in message:
        return Envelope(result_json=json.dumps(message["result"], ensure_ascii=False))
    if "result_text" in message:
        return Envelope(result_json=text_to_json(str(message["result_text"])))
    if isinstance(message.get("error"), dict):
        verdict = _ERROR_VERDICTS.get(str(message.get("verdict", "ERROR")), Verdict.ERROR)
        return Envelope(error=_error(message["error"]), error_verdict=verdict)
    return Envelope(malformed=f"unknown result message keys {sorted(message)}")
