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

from gristmill import strictjson
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


MAX_LINE = 2**32 - 1
"""Stack-frame line numbers travel as uint32."""
MAX_FRAMES = 200
"""Frames kept of an error's stack: the innermost ones, where the error happened (a
runaway recursion has thousands of frames that say the same thing)."""


def _dumps(value: Any) -> str:
    """JSON text that is valid UTF-8: lone surrogates from the job are kept as escapes."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def _clean(value: object) -> str:
    """A job's string, made valid UTF-8 for the contract (a lone surrogate becomes '?')."""
    return str(value).encode("utf-8", "replace").decode()


def text_to_json(text: str) -> str:
    """A result given as text: kept when it is JSON, else made a JSON string."""
    try:
        return _dumps(strictjson.loads(text))
    except ValueError:
        return _dumps(text)


def _line(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LINE:
        return value
    return 0


def _error(data: dict[str, Any]) -> JobError:
    frames = data.get("stack") or []
    frames = frames[-MAX_FRAMES:] if isinstance(frames, list) else []
    stack = tuple(
        StackFrame(
            file=_clean(f.get("file", "")),
            line=_line(f.get("line", 0)),
            function=_clean(f.get("function", "")),
            text=_clean(f.get("text", "")),
        )
        for f in frames
        if isinstance(f, dict)
    )
    return JobError(_clean(data.get("name", "Error")), _clean(data.get("message", "")), stack)


def parse(raw: bytes) -> Envelope:
    """The channel's message; anything off the protocol is `malformed`, never an exception."""
    if not raw.strip():
        return Envelope()
    try:
        message = strictjson.loads(raw)
    except ValueError as error:
        return Envelope(malformed=f"the result channel is not JSON: {error}")
    if not isinstance(message, dict):
        return Envelope(malformed="the result channel must hold a JSON object")
    if "result" in message:
        return Envelope(result_json=_dumps(message["result"]))
    if "result_text" in message:
        return Envelope(result_json=text_to_json(_clean(message["result_text"])))
    if isinstance(message.get("error"), dict):
        verdict = _ERROR_VERDICTS.get(str(message.get("verdict", "ERROR")), Verdict.ERROR)
        return Envelope(error=_error(message["error"]), error_verdict=verdict)
    return Envelope(malformed=f"unknown result message keys {sorted(message)}")
