"""Python's lockfile, as `uv pip compile --generate-hashes` writes it, checked.

    requirements.txt   `name==version` (extras allowed), each with at least one
                       `--hash=sha256:<hex>` on the line or its backslash
                       continuations; comments; nothing else

Refused, naming the line: URLs, paths, VCS and editable requirements (`-e`), version
ranges and markers, and every installer option (`--index-url`, `--extra-index-url`,
`--find-links`, `-r`, `-c`, `--no-binary`, ...), which would make uv fetch from
elsewhere or read another file. The install step gets `Pin.render()` of what was
checked, never the caller's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from gristmill.languages import LockfileRefused

__all__ = ["REQUIREMENTS_TXT", "Pin", "requirements_txt"]

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
    """Lines with comments removed and backslash continuations joined (by one space),
    each with the number of the line it starts on. (Readers differ on a comment ending in a
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
            logical.append((start, " ".join(joined.split())))
            joined = ""
    logical.append((start, " ".join(joined.split())))
    return [(number, text) for number, text in logical if text]


def _pin(number: int, text: str) -> Pin:
    requirement, *options = text.split()
    match = _PIN.fullmatch(requirement)
    if match is None:
        raise LockfileRefused.at(
            number,
            text,
            "is not `name==version`; a lockfile may only pin packages of the configured "
            "index (no URLs, paths, options or other specifiers)",
        )
    try:
        Version(match["version"])
    except InvalidVersion as error:
        raise LockfileRefused.at(number, text, f"is not a pin: {error}") from error
    hashes = [_HASH.fullmatch(option) for option in options]
    if not hashes or None in hashes:
        refused = next((o for o, h in zip(options, hashes, strict=True) if h is None), None)
        why = f"{refused!r} is not" if refused else "it has no"
        raise LockfileRefused.at(number, text, f"pins, but {why} `--hash=sha256:<64 hex digits>`")
    return Pin(
        name=str(canonicalize_name(match["name"])),
        extras=tuple((match["extras"] or "").split(",")) if match["extras"] else (),
        version=match["version"],
        sha256=tuple(h["hex"] for h in hashes if h is not None),
    )


def requirements_txt(content: str) -> tuple[Pin, ...]:
    """The pins of a hash-pinned requirements.txt; raises `LockfileRefused` naming the
    first other line."""
    pins = tuple(_pin(number, text) for number, text in _logical_lines(content))
    if not pins:
        raise LockfileRefused("the lockfile pins no package")
    return pins
