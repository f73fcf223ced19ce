"""What a lockfile given back may say, checked before anything is installed from it.

A lockfile a caller sends (`Job.lockfile`) is installed for them, so it is checked
first: a line naming an archive by URL or path, another registry, a version range or
an option of the installer would fetch code from wherever the caller likes. The rules
are each language's own, in its folder: its resolver's `check_lockfile`
(`gristmill.languages.resolver.ChecksLockfiles`), which accepts only the form the resolver
itself writes; what is installed is then re-rendered from what was checked, so that
the installer never reads a line the check did not parse. This module only calls
them, refuses a format without rules, and says how a refusal names its line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from gristmill.errors import quoted

__all__ = ["LockfileRefused", "check", "json_line"]


class LockfileRefused(ValueError):
    """The lockfile says something other than pinned, hashed packages of the configured
    registry; `str()` says what, and `line` which line (None: the whole lockfile)."""

    def __init__(self, why: str, line: int | None = None) -> None:
        super().__init__(why)
        self.line = line

    @classmethod
    def at(cls, number: int, text: str, why: str) -> LockfileRefused:
        """The refusal of line `number` of the lockfile, whose text is `text`."""
        return cls(f"line {number}: {quoted(text.strip())} {why}", number)


def json_line(content: str, where: Sequence[str | int]) -> tuple[int, str]:
    """The number and text of the line a JSON lockfile's value at `where` starts on (its
    keys from the top, an int for the n-th object of a list), found as the tools write
    them: each key quoted and followed by `:`, after the one before; where a step is not
    found, the line of the last one that was."""
    position = found_at = 0
    for step in where:
        if isinstance(step, int):
            pattern, count = re.compile(r"\{"), step + 1
        else:
            pattern, count = re.compile(rf"{re.escape(json.dumps(step))}\s*:"), 1
        for _ in range(count):
            found = pattern.search(content, position)
            if found is None:
                break
            found_at, position = found.start(), found.end()
        else:
            continue
        break
    number = content.count("\n", 0, found_at) + 1
    lines = content.splitlines()
    return number, lines[number - 1] if number <= len(lines) else ""


def check(lock_format: str, content: str, own_rules: Callable[[str], None] | None = None) -> None:
    """Raises `LockfileRefused` unless `content` is a lockfile of `lock_format` that only
    pins packages, by `own_rules` (the resolver's `ChecksLockfiles.check_lockfile`);
    without rules a format is refused, never trusted. No format may hold a NUL byte
    (tools read up to one, checks past it)."""
    if own_rules is None:
        raise LockfileRefused(f"the service has no rules for {lock_format!r} lockfiles")
    if "\0" in content:
        number = content[: content.index("\0")].count("\n") + 1
        raise LockfileRefused(f"line {number}: the lockfile contains a NUL byte", number)
    own_rules(content)
