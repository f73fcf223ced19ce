"""What only Python code can say about C# jobs: their parameters (`describe.py`, read
with tree-sitter), and their NuGet dependencies (`#r "nuget: Name, Version"` lines, the
dotnet-script convention), resolved and installed by our own NuGet v3 client
(`nuget.py`, driven by `nuget_resolver.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.languages import (
    ArgumentsRejected,
    Dependency,
    InvalidRequest,
    Job,
    LanguagePlugin,
    strictjson,
)

from . import signature
from .resolver import NuGet, find


def _json_type(schema: Mapping[str, Any]) -> str:
    """The JSON type a parameter's schema asks for ("" when any will do, or when the
    wrapper accepts more than the schema says: an enum's number as well as its name)."""
    if "anyOf" in schema:
        kinds = [_json_type(option) for option in schema["anyOf"]]
        return next((kind for kind in kinds if kind and kind != "null"), "")
    if "enum" in schema:
        return ""
    kind = schema.get("type", "")
    return kind if isinstance(kind, str) else ""


def _fits(value: object, expected: str) -> bool:
    kind = strictjson.schema_type(value)
    return kind == expected or (expected == "number" and kind == "integer")


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        return signature.schema(code, entry_point)

    def job_message(self, job: Job, source_path: str) -> bytes:
        """The JSON job message, after the checks that need no compiler: an argument the
        entry point lacks, a required one missing, or a value of the wrong JSON type is
        INVALID_ARGUMENTS before any build. (What is inside arrays and objects, integer
        ranges and enum names are checked by the wrapper, which knows the types exactly.)"""
        try:
            schema = signature.schema(job.code, job.entry_point)
        except InvalidRequest:
            schema = None  # code that does not parse: the compiler will say why
        if schema is not None:
            properties = schema["properties"]
            unknown = [name for name in job.args if name not in properties]
            if unknown:
                raise ArgumentsRejected(
                    f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                    f"({job.entry_point} takes {', '.join(properties) or 'none'})"
                )
            missing = [name for name in schema["required"] if name not in job.args]
            if missing:
                raise ArgumentsRejected(
                    f"missing argument{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                )
            for name, value in job.args.items():
                expected = _json_type(properties[name])
                if expected and value is not None and not _fits(value, expected):
                    raise ArgumentsRejected(
                        f"{name}: expected {expected}, got {strictjson.schema_type(value)}"
                    )
        return super().job_message(job, source_path)

    def resolver(self) -> NuGet:
        return NuGet()

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return find(code)
