"""Checks on a request's plain values, each failure an `InvalidRequest` naming the field.

Kept free of protobuf so that the rules read on their own and are tested without it;
`convert` applies them while building a `gristmill.model.Job`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from gristmill.config import ENV_PREFIX
from gristmill.errors import InvalidRequest, LimitTooHigh
from gristmill.model import JobFile, Limits, Lockfile

_JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENTRY_POINT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,255}")


def job_id(value: str, field: str = "job.id") -> str:
    if not value:
        raise InvalidRequest(field, "required")
    if not _JOB_ID.fullmatch(value):
        raise InvalidRequest(field, "at most 128 characters of [A-Za-z0-9._:-]")
    return value


def entry_point(value: str, default: str, field: str = "job.entry_point") -> str:
    if not value:
        return default
    if not _ENTRY_POINT.fullmatch(value):
        raise InvalidRequest(field, f"{value!r} is not a valid name")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def args_json(text: str) -> dict[str, Any]:
    """The arguments from exact JSON text; integers keep every digit."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise InvalidRequest("job.args_json", f"not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise InvalidRequest("job.args_json", "must be a JSON object")
    return value


def files(items: Iterable[JobFile], name: str = "job.files") -> tuple[JobFile, ...]:
    """The job's extra files; each path stays inside the job directory."""
    seen: set[PurePosixPath] = set()
    checked = []
    for index, item in enumerate(items):
        field = f"{name}[{index}].path"
        path = PurePosixPath(item.path)
        if not item.path or "\0" in item.path:
            raise InvalidRequest(field, "must be a non-empty path")
        if path.is_absolute() or ".." in path.parts:
            raise InvalidRequest(field, f"{item.path!r} must be relative, without '..'")
        if path in seen:
            raise InvalidRequest(field, f"{item.path!r} is given twice")
        seen.add(path)
        checked.append(item)
    return tuple(checked)


def env(values: Mapping[str, str]) -> dict[str, str]:
    for name, value in values.items():
        field = f"job.env[{name!r}]"
        if not _ENV_NAME.fullmatch(name):
            raise InvalidRequest(field, "not a valid environment variable name")
        if name.upper().startswith(ENV_PREFIX):
            raise InvalidRequest(field, f"names starting with {ENV_PREFIX} are reserved")
        if "\0" in value:
            raise InvalidRequest(field, "the value contains a NUL byte")
    return dict(values)


def limits(asked: Limits, defaults: Limits, maxima: Limits) -> Limits:
    """`asked` with zeros taken from `defaults`; a value over `maxima` is refused, not clipped."""
    if asked.network and not maxima.network:
        raise InvalidRequest("job.limits.network", "this server does not allow network access")
    resolved: dict[str, Any] = {"network": asked.network}
    for limit in dataclasses.fields(Limits):
        if limit.name == "network":
            continue
        value = getattr(asked, limit.name) or getattr(defaults, limit.name)
        maximum = getattr(maxima, limit.name)
        if value > maximum:
            raise LimitTooHigh(limit.name, value, maximum)
        resolved[limit.name] = value
    return Limits(**resolved)


DEADLINE_MARGIN = 0.05
"""The share of a caller's deadline kept back, so that the outcome still reaches it."""


def clamp_wall_time(resolved: Limits, remaining_s: float | None) -> Limits:
    """The limits with the wall time cut to the caller's remaining deadline, if it has one.

    A little is kept back: a job stopped exactly at the deadline would leave no time
    to deliver its TIMEOUT outcome, and the caller would see DEADLINE_EXCEEDED instead.
    """
    if remaining_s is None:
        return resolved
    remaining_ms = max(1, int(remaining_s * 1000 * (1 - DEADLINE_MARGIN)))
    return dataclasses.replace(resolved, wall_time_ms=min(resolved.wall_time_ms, remaining_ms))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def lockfile(
    given: Lockfile, sha256: str, language: str, lock_format: str | None, field: str
) -> Lockfile:
    """A lockfile a job may be installed from: for its language, in its resolver's format,
    its content matching `sha256` when that is given. Empty language and format mean
    the job's."""
    if lock_format is None:
        raise InvalidRequest(field, f"{language} jobs have no dependencies to lock")
    if given.language and given.language != language:
        raise InvalidRequest(f"{field}.language", f"{given.language!r} is not {language!r}")
    if given.format and given.format != lock_format:
        raise InvalidRequest(f"{field}.format", f"{given.format!r} is not {lock_format!r}")
    if not given.content:
        raise InvalidRequest(f"{field}.content", "required")
    checked = Lockfile(language, lock_format, given.content)
    if sha256 and sha256 != checked.sha256:
        why = "is not hex SHA-256" if not _SHA256.fullmatch(sha256) else "does not match content"
        raise InvalidRequest(f"{field}.sha256", why)
    return checked
