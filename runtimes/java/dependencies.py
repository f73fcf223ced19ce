"""What a Java job needs from Maven: its `//DEPS group:artifact:version` lines (JBang's
convention), resolved and installed by `resolver.py`."""

from __future__ import annotations

import re

from gristmill.languages import Dependency, DependencySource
from gristmill.languages.errors import DependencyFailure

from .resolver import COORDINATE

_DEPS_LINE = re.compile(r"^\s*//DEPS\s+(?P<list>.*)$")


def declared(code: str) -> tuple[Dependency, ...]:
    """The `//DEPS group:artifact:version` lines (JBang's convention; several per line
    allowed, separated by spaces or commas), in order, each once."""
    found: dict[str, Dependency] = {}
    for number, line in enumerate(code.splitlines(), start=1):
        match = _DEPS_LINE.match(line)
        if match is None:
            continue
        for coordinate in re.split(r"[\s,]+", match["list"].strip()):
            if not coordinate:
                continue
            if not COORDINATE.fullmatch(coordinate):
                raise DependencyFailure(
                    f"line {number}: {coordinate!r} is not group:artifact:version "
                    "(letters, digits, '.', '_', '-'; one exact version)"
                )
            group, artifact, _version = coordinate.split(":")
            name = f"{group}:{artifact}"
            if name not in found:
                found[name] = Dependency(
                    name, coordinate, DependencySource.DECLARED, f"//DEPS, line {number}"
                )
    return tuple(found.values())
