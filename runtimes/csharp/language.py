"""What only Python code can say about C# jobs: their NuGet dependencies (`#r "nuget:
Name, Version"` lines, the dotnet-script convention), resolved and installed by our own
NuGet v3 client (`nuget.py`), and their parameters (`describe.py`, tree-sitter)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.languages.plugin import LanguagePlugin
from gristmill.model import Dependency

from . import describe, nuget_resolver


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        return describe.schema(code, entry_point)

    def resolver(self) -> nuget_resolver.NuGet:
        return nuget_resolver.NuGet()

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return nuget_resolver.find(code)
