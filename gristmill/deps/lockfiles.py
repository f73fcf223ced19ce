"""What a lockfile may say: exact versions from the configured index, with their hashes.

A lockfile a caller sends (`Job.lockfile`) is installed for them, so it is checked
before anything runs: a line naming an archive by URL or path, another index, or an
option of the installer would fetch code from wherever the caller likes, and an
archive that is not a wheel runs its build code during the install. Only the form
the resolver itself writes is accepted, and what is installed is re-rendered from
what was checked, so that the installer never reads a line the check did not parse.

    requirements.txt   `name==version` (extras allowed), each with at least one
                       `--hash=sha256:<hex>` on the line or its backslash
                       continuations; comments; nothing else

`check` is what the request's validation calls; a resolver calls the format's own
parser (`requirements_txt`) to get the pins it installs. A language whose resolver
writes another format gives its own checker with `register` when its plugin loads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = [
    "REQUIREMENTS_TXT",
    "LockfileRefused",
    "Pin",
    "check",
    "register",
    "requirements_txt",
]

REQUIREMENTS_TXT = "requirements.txt"

_PIN = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?:\[(?P<extras>[A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*)\])?"
    r"==(?P<version>[A-Za-z0-9.+!_-]+)"
)
_HASH = re.compile(r"--hash=sha256:(?P<hex>[0-9a-f]{64})")
# As pip and uv read it: a `#` at the start of a line or after whitespace starts a comment.
_COMMENT = re.compile(r"(^|\s)#.*$")
_CONTINUED = "\\"


class LockfileRefused(ValueError):
    """The lockfile says something other than pinned, hashed packages; `str()` says what."""


@dataclass(frozen=True)
class Pin:
    """One exact package version and the hashes its archives may have."""

    name: str
    extras: tuple[str, ...]
    version: str
    sha256: tuple[str, ...]

    def render(self) -> str:
        """The pin as one requirements.txt line."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        hashes = "".join(f" --hash=sha256:{h}" for h in self.sha256)
        return f"{self.name}{extras}=={self.version}{hashes}\n"


def _logical_lines(content: str) -> list[tuple[int, str]]:
    """Lines with comments removed and backslash continuations joined, each with the
    number of the line it starts on. (Readers differ on a comment ending in a
    backslash; that does not matter here, as the installer reads a rendering of the
    pins, not this text.)"""
    logical: list[tuple[int, str]] = []
    start, joined = 1, ""
    for number, line in enumerate(content.splitlines(), start=1):
        text = _COMMENT.sub("", line).rstrip()
        if not joined:
            start = number
        joined += " " + text.removesuffix(_CONTINUED)
        if not text.endswith(_CONTINUED):
            logical.append((start, joined.strip()))
            joined = ""
    logical.append((start, joined.strip()))
    return [(number, text) for number, text in logical if text]


def _pin(number: int, text: str) -> Pin:
    requirement, *options = text.split()
    match = _PIN.fullmatch(requirement)
    if match is None:
        shown = text if len(text) <= 80 else f"{text[:77]}..."
        raise LockfileRefused(
            f"line {number}: {shown!r} is not `name==version`; a lockfile may only pin "
            "packages of the configured index (no URLs, paths, options or other specifiers)"
        )
    try:
        Version(match["version"])
    except InvalidVersion as error:
        raise LockfileRefused(f"line {number}: {error}") from error
    hashes = [_HASH.fullmatch(option) for option in options]
    if not hashes or None in hashes:
        refused = next((o for o, h in zip(options, hashes, strict=True) if h is None), None)
        why = f"{refused!r} is not" if refused else "it has no"
        raise LockfileRefused(f"line {number}: {why} `--hash=sha256:<64 hex digits>`")
    return Pin(
        name=str(canonicalize_name(match["name"])),
        extras=tuple((match["extras"] or "").split(",")) if match["extras"] else (),
        version=match["version"],
        sha256=tuple(h["hex"] for h in hashes if h is not None),
    )


def requirements_txt(content: str) -> tuple[Pin, ...]:
    """The pins of a hash-pinned requirements.txt; raises `LockfileRefused` for any
    other line."""
    if "\0" in content:
        raise LockfileRefused("the lockfile contains a NUL byte")
    pins = tuple(_pin(number, text) for number, text in _logical_lines(content))
    if not pins:
        raise LockfileRefused("the lockfile pins no package")
    return pins


_CHECKERS: dict[str, Callable[[str], object]] = {REQUIREMENTS_TXT: requirements_txt}


def register(lock_format: str, checker: Callable[[str], object]) -> None:
    """Makes `check` accept lockfiles of `lock_format` that `checker` accepts: it raises
    `LockfileRefused` for anything but exact pins with checksums."""
    _CHECKERS[lock_format] = checker


def check(lock_format: str, content: str) -> None:
    """Raises `LockfileRefused` unless `content` is a lockfile of `lock_format` that only
    pins packages; a format this module has no rules for is refused, never trusted."""
    checker = _CHECKERS.get(lock_format)
    if checker is None:
        raise LockfileRefused(f"the service has no rules for {lock_format!r} lockfiles")
    checker(content)
