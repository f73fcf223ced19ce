"""Structured logs: one JSON object or logfmt line per record for collectors, a
readable line for people on a terminal.

A record's own fields come from `extra=` (`log.info("job finished", extra={"verdict":
...})`) and follow the message. Whatever the format, credentials in URLs and
`password=`/`token=`-like pairs are masked in the written line: a DSN in an error
message must not reach a log.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import Any, TextIO

from gristmill.config import TelemetryConfig

__all__ = ["ConsoleFormatter", "JsonFormatter", "LogfmtFormatter", "configure", "redact"]

# The attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

_SECRETS = (
    # scheme://user:password@host
    re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*:)[^@/\s\"']+(?=@)"),
    # password=..., token: ..., secret=... (libpq DSNs, headers, settings)
    re.compile(
        r"(?P<keep>\b(?:password|passwd|pwd|token|secret|authorization|api_key)\b"
        r"\\?[\"']?\s*[=:]\s*\\?[\"']?)(?:bearer\s+)?[^\s\"'\\&,;]+",
        re.IGNORECASE,
    ),
)


def _masked(match: re.Match[str]) -> str:
    return match.group("keep") + "***"


def redact(text: str) -> str:
    """`text` with credentials masked."""
    for pattern in _SECRETS:
        text = pattern.sub(_masked, text)
    return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own fields, from `extra=`, in the order given."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


_BARE = re.compile(r"[^\s\"=\\]+")


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def _pairs(fields: dict[str, Any]) -> str:
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class LogfmtFormatter(logging.Formatter):
    """`ts=… level=… logger=… msg="…" key=value …`, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return redact(_pairs(fields))


class ConsoleFormatter(logging.Formatter):
    """`12:03:04.567 INFO  job finished  id=… verdict=SUCCESS …`, the traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = _pairs(_fields(record))
        line = f"{moment} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


_FORMATTERS: dict[str, type[logging.Formatter]] = {
    "console": ConsoleFormatter,
    "json": JsonFormatter,
    "logfmt": LogfmtFormatter,
}


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs, told apart from any other on the root logger."""


def configure(config: TelemetryConfig, stream: TextIO | None = None) -> logging.Handler:
    """Sends every log record at `config.log_level` or above to `stream` (stderr) in
    `config.log_format`, replacing what an earlier call installed."""
    stream = stream or sys.stderr
    name = config.log_format
    if name == "auto":
        name = "console" if stream.isatty() else "json"
    handler = _Handler(stream)
    handler.setFormatter(_FORMATTERS[name]())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    return handler
