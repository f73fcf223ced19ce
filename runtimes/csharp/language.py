"""What only Python code can say about C# jobs: their parameters (`describe.py`, read
with tree-sitter), and their NuGet dependencies (`#r "nuget: Name, Version"` lines, the
dotnet-script convention), resolved and installed by our own NuGet v3 client
(`nuget.py`, driven by `nuget_resolver.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.errors import InvalidRequest
from gristmill.languages.plugin import ArgumentsRejected, LanguagePlugin
from gristmill.model import Dependency, Job

from . import describe, nuget_resolver


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        return describe.schema(code, entry_point)

    def job_message(self, job: Job, source_path: str) -> bytes:
        """The JSON job message, after the checks that need no compiler: an argument the
        entry point lacks, or a required one missing, is INVALID_ARGUMENTS before any
        build. (Types are checked by the wrapper, which knows them exactly.)"""
        try:
            schema = describe.schema(job.code, job.entry_point)
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
        return super().job_message(job, source_path)

    def resolver(self) -> nuget_resolver.NuGet:
        return nuget_resolver.NuGet()

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return nuget_resolver.find(code)
