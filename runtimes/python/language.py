"""What only Python code can say about Python jobs: their parameters, read with `ast`, and
their dependencies (`dependencies.py`, resolved with uv by `resolver.py`)."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from gristmill.errors import InvalidRequest
from gristmill.languages.plugin import LanguagePlugin
from gristmill.model import Dependency

from . import dependencies
from .resolver import Uv

_SCHEMA_TYPES = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "List": "array",
    "tuple": "array",
    "dict": "object",
    "Dict": "object",
}


def _schema(annotation: ast.expr | None) -> dict[str, Any]:
    if annotation is None:
        return {}
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return _schema(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        options = [_schema(annotation.left), _schema(annotation.right)]
        return {"anyOf": [o for o in options if o]} if all(options) else {}
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return {"type": "null"}
    if isinstance(annotation, ast.Subscript):
        base = ast.unparse(annotation.value).rsplit(".", 1)[-1]
        if base == "Optional":
            inner = _schema(annotation.slice)
            return {"anyOf": [inner, {"type": "null"}]} if inner else {}
        schema = _schema(annotation.value)
        if schema.get("type") == "array" and not isinstance(annotation.slice, ast.Tuple):
            items = _schema(annotation.slice)
            if items:
                schema["items"] = items
        return schema
    name = ast.unparse(annotation).rsplit(".", 1)[-1]
    return {"type": _SCHEMA_TYPES[name]} if name in _SCHEMA_TYPES else {}


class Plugin(LanguagePlugin):
    def describe(self, code: str, entry_point: str) -> Mapping[str, Any]:
        try:
            tree = ast.parse(code)
        except SyntaxError as error:
            raise InvalidRequest("code", f"line {error.lineno}: {error.msg}") from error
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
        arguments = function.args
        parameters = arguments.args + arguments.kwonlyargs
        defaults: dict[str, ast.expr] = dict(
            zip([a.arg for a in arguments.args][::-1], arguments.defaults[::-1], strict=False)
        )
        defaults.update(
            {
                a.arg: d
                for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
                if d is not None
            }
        )
        properties: dict[str, Any] = {}
        for parameter in parameters:
            schema = _schema(parameter.annotation)
            if parameter.arg in defaults:
                with contextlib.suppress(ValueError):
                    schema["default"] = ast.literal_eval(defaults[parameter.arg])
            properties[parameter.arg] = schema
        required = [p.arg for p in parameters if p.arg not in defaults]
        return {"type": "object", "properties": properties, "required": required}

    def resolver(self) -> Uv:
        return Uv()

    def dependencies(self, code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
        return dependencies.find(code, files)
