"""What only Python code can say about Bash jobs: their `name="$1"` declarations, read
with the tree-sitter Bash grammar."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gristmill.languages import ArgumentsRejected, Job, LanguagePlugin, syntax

BASH = syntax.grammar("tree_sitter_bash")


@dataclass(frozen=True)
class Parameter:
    name: str
    position: int
    default: str | None


def _positional(value: syntax.Node | None) -> tuple[int, str | None] | None:
    """`$N`, `${N}` or `${N:-default}`, alone or alone in double quotes: N and the default."""
    if value is not None and value.type == "string" and value.named_child_count == 1:
        value = value.named_children[0]
    if value is None or value.type not in ("simple_expansion", "expansion"):
        return None
    names = list(syntax.children(value, "variable_name"))
    if len(names) != 1 or not syntax.text(names[0]).isdigit() or syntax.text(names[0]) == "0":
        return None
    tokens = [child.type for child in value.children]
    if value.type == "simple_expansion" or tokens == ["${", "variable_name", "}"]:
        return int(syntax.text(names[0])), None
    if tokens[:3] != ["${", "variable_name", ":-"] or tokens[-1] != "}" or len(tokens) != 5:
        return None
    default = value.children[3]
    if default.type == "string":
        return int(syntax.text(names[0])), "".join(
            syntax.text(part) for part in syntax.children(default, "string_content")
        )
    return int(syntax.text(names[0])), syntax.text(default)


def parameters(code: str) -> list[Parameter]:
    """The declared parameters in order of position; the first declaration of each wins."""
    found: dict[int, Parameter] = {}
    for node in syntax.walk(syntax.parse(BASH, code, tolerant=True)):
        if node.type != "variable_assignment":
            continue
        positional = _positional(node.child_by_field_name("value"))
        if positional is not None:
            position, default = positional
            name = syntax.field_text(node, "name")
            found.setdefault(position, Parameter(name, position, default))
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
        """The positional values, NUL-separated; a gap is "" so that `${n:-default}` applies.
        A script's (`Job.script`) are its argv as they are."""
        if job.script is not None:
            return b"".join(value.encode() + b"\0" for value in job.script)
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
