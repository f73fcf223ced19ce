"""What only Python code can say about Bash jobs: their `name="$1"` declarations."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gristmill.languages.plugin import ArgumentsRejected, LanguagePlugin
from gristmill.model import Job

_DECLARATION = re.compile(
    r"""^\s*(?:local\s+|declare\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=
        (?P<quote>["']?)\$(?:(?P<bare>[1-9])|\{(?P<braced>[1-9][0-9]*)(?::-(?P<default>[^}]*))?\})
        (?P=quote)\s*(?:\#.*)?$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Parameter:
    name: str
    position: int
    default: str | None


def parameters(code: str) -> list[Parameter]:
    """The declared parameters in order of position; the first declaration of each wins."""
    found: dict[int, Parameter] = {}
    for line in code.splitlines():
        match = _DECLARATION.match(line)
        if match is None:
            continue
        position = int(match["bare"] or match["braced"])
        found.setdefault(position, Parameter(match["name"], position, match["default"]))
    return [found[p] for p in sorted(found)]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        properties: dict[str, Any] = {}
        for parameter in parameters(code):
            schema: dict[str, Any] = {"type": "string"}
            if parameter.default is not None:
                schema["default"] = parameter.default
            properties[parameter.name] = schema
        required = [p.name for p in parameters(code) if p.default is None]
        return {"type": "object", "properties": properties, "required": required}

    def job_message(self, job: Job, source_path: str) -> bytes:
        """The positional values, NUL-separated; a gap is "" so that `${n:-default}` applies."""
        declared = parameters(job.code)
        names = {p.name for p in declared}
        unknown = sorted(set(job.args) - names)
        if unknown:
            raise ArgumentsRejected(f"unknown argument {unknown[0]!r}")
        values = [""] * (declared[-1].position if declared else 0)
        for parameter in declared:
            if parameter.name in job.args:
                values[parameter.position - 1] = _as_text(job.args[parameter.name])
            elif parameter.default is None:
                raise ArgumentsRejected(f"missing argument {parameter.name!r}")
        if any("\0" in value for value in values):
            raise ArgumentsRejected("a Bash argument cannot contain a NUL character")
        return b"".join(value.encode() + b"\0" for value in values)
