"""What only Python code can say about TypeScript jobs: their entry point's parameters
(`signature.py`, read with the tree-sitter grammar), the arguments checked against them
before anything runs, and their npm dependencies (`dependencies.py`, resolved with
`bun install` by `resolver.py`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.languages import (
    ArgumentsRejected,
    Dependency,
    DependencyFailure,
    InvalidRequest,
    Job,
    LanguagePlugin,
)

from . import dependencies, signature
from .resolver import Bun

_MAX_CHECK_DEPTH = 32


def _fits(value: Any, schema: Mapping[str, Any], depth: int = 0) -> bool:
    """Whether a JSON value fits the parts of a schema that `signature` writes."""
    if depth > _MAX_CHECK_DEPTH or not schema:
        return True
    if "anyOf" in schema:
        return any(_fits(value, option, depth + 1) for option in schema["anyOf"])
    if "enum" in schema:
        return any(value == v and type(value) is type(v) for v in schema["enum"]) or (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and any(value == v and not isinstance(v, bool | str) for v in schema["enum"])
        )
    kind = schema.get("type")
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        if not isinstance(value, list):
            return False
        prefix = schema.get("prefixItems")
        if prefix is not None:
            return len(value) == len(prefix) and all(
                _fits(v, s, depth + 1) for v, s in zip(value, prefix, strict=True)
            )
        items = schema.get("items", {})
        return all(_fits(v, items, depth + 1) for v in value)
    if kind == "object":
        if not isinstance(value, dict):
            return False
        properties = schema.get("properties", {})
        if any(name not in value for name in schema.get("required", ())):
            return False
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            inner = properties.get(key, extra if isinstance(extra, dict) else {})
            if not _fits(item, inner, depth + 1):
                return False
        return True
    return True


def _described(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(_described(option) for option in schema["anyOf"])
    return str(
        (schema.get("format") and f"{schema['type']} ({schema['format']})")
        or schema.get("type", "any")
    )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        found = signature.signature(code, entry_point)
        if found is None:
            raise InvalidRequest("entry_point", f"the code defines no function {entry_point!r}")
        return signature.schema(found)

    def job_message(self, job: Job, source_path: str) -> bytes:
        """The JSON job message, with the entry point's parameter names in order.

        Arguments that do not fit (unknown, missing, of another JSON type) are refused
        here, before anything runs. Code that tree-sitter cannot read is left to Bun,
        which reports its own syntax error with the line. A script (`Job.script`) gets
        its argv instead of arguments.
        """
        imports = dependencies.versioned_imports(job.code)
        if job.script is not None:
            script = {"script": list(job.script), "source": source_path}
            return json.dumps({**script, "versioned_imports": imports}).encode()
        try:
            found = signature.signature(job.code, job.entry_point)
        except InvalidRequest:
            found = None
        names: list[str] | None = None
        conversions: dict[str, list[str]] = {"bigint": [], "date": []}
        if found is not None and found.parameters is not None:
            parameters = found.parameters
            names = [p.name for p in parameters]
            unknown = [key for key in job.args if key not in names]
            if unknown:
                listed = ", ".join(names) or "none"
                raise ArgumentsRejected(
                    f"unknown argument {unknown[0]!r}; parameters of {job.entry_point}: {listed}"
                )
            for parameter in parameters:
                if parameter.name not in job.args:
                    if parameter.required:
                        raise ArgumentsRejected(f"missing argument {parameter.name!r}")
                    continue
                value = job.args[parameter.name]
                if not _fits(value, parameter.schema):
                    raise ArgumentsRejected(
                        f"argument {parameter.name!r} must be {_described(parameter.schema)}, "
                        f"got {_json_kind(value)}"
                    )
                if parameter.conversion:
                    conversions[parameter.conversion].append(parameter.name)
        message = {
            "entry_point": job.entry_point,
            "source": source_path,
            "args": dict(job.args),
            "parameters": names,
            "bigint": conversions["bigint"],
            "date": conversions["date"],
            "versioned_imports": imports,
        }
        return json.dumps(message).encode()

    def resolver(self) -> Bun:
        return Bun()

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return dependencies.find(code, files)

    def job_dependencies(self, code: str, files: Mapping[str, bytes]) -> tuple[Dependency, ...]:
        """A `package.json` among the job's files declares them; else the imports."""
        manifest = files.get(dependencies.PACKAGE_JSON)
        if manifest is None:
            return dependencies.find(code, list(files))
        try:
            text = manifest.decode()
        except UnicodeDecodeError as error:
            raise DependencyFailure(f"{dependencies.PACKAGE_JSON}: not UTF-8") from error
        return dependencies.find(code, list(files), package_json=text)
