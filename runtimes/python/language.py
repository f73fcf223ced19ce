"""What only Python code can say about Python jobs: their parameters, read with `ast`
(`schema.py`), and their dependencies (`dependencies.py`, resolved with uv by `resolver.py`)."""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.languages import Dependency, InvalidRequest, LanguagePlugin

from . import dependencies, signature
from .resolver import Uv


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        try:
            tree = ast.parse(code)
        except SyntaxError as error:
            raise InvalidRequest("code", f"line {error.lineno}: {error.msg}") from error
        except (ValueError, RecursionError, MemoryError) as error:
            raise InvalidRequest("code", f"does not parse: {error}") from error
        function = next(
            (
                node
                for node in tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name == entry_point
            ),
            None,
        )
        if function is None:
            raise InvalidRequest("entry_point", f"the code defines no function {entry_point!r}")
        return signature.describe(tree, function)

    def resolver(self) -> Uv:
        return Uv()

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return dependencies.find(code, files)
