"""The JSON Schema of a Python entry point's parameters, read with `ast` (never run).

What a form-building UI needs: the type from the annotation, or from the default when
there is none; `datetime`/`date`/`time`/`UUID` as formatted strings; `bytes` as base64;
`Literal[...]` and `Enum` classes as `enum` (an Enum member as a default becomes its
value); dataclasses, `TypedDict`s, pydantic models and `NamedTuple`s defined in the code as
objects with their properties; lists, tuples and maps with their item types; optional
parameters with their defaults; descriptions from the docstring (its first paragraph,
and each parameter's line in an `Args:` section or a `:param name:` field). What cannot
be expressed becomes `{}`, any value.
"""

from __future__ import annotations

import ast
import contextlib
import re
from typing import Any

from gristmill.languages import strictjson

_FORMATTED = {
    "datetime": "date-time",
    "date": "date",
    "time": "time",
    "UUID": "uuid",
}
_SCALARS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "Decimal": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "bytes": {"type": "string", "contentEncoding": "base64"},
    "None": {"type": "null"},
    "NoneType": {"type": "null"},
    **{name: {"type": "string", "format": fmt} for name, fmt in _FORMATTED.items()},
}
_ARRAYS = {"list", "List", "Sequence", "Iterable", "set", "Set", "frozenset", "FrozenSet"}
_TUPLES = {"tuple", "Tuple"}
_MAPS = {"dict", "Dict", "Mapping", "MutableMapping"}
_UNIONS = {"Union"}
_OPTIONALS = {"Optional"}
_PASS_THROUGH = {"Annotated", "Final", "Required", "NotRequired"}
_ENUM_BASES = {"Enum", "IntEnum", "StrEnum", "Flag", "IntFlag"}
_RECORD_BASES = {"TypedDict", "BaseModel", "NamedTuple"}
MAX_DEPTH = 8
"""How deep nested records are followed (a record that contains itself stops there)."""


def _name(node: ast.expr) -> str:
    """The last component of a dotted name (`typing.List` -> `List`); "" otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    return ""


def _literal(node: ast.expr) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _type_of_value(value: Any) -> dict[str, Any]:
    kind = strictjson.schema_type(value)
    return {"type": kind} if kind else {}


class Schemas:
    """Schemas of annotations, knowing the classes the module defines."""

    def __init__(self, tree: ast.Module) -> None:
        self._classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def enum_values(self, name: str) -> list[Any] | None:
        """The values of an Enum class of the module, by name; None for anything else."""
        node = self._classes.get(name)
        if node is None or not any(_name(base) in _ENUM_BASES for base in node.bases):
            return None
        values = []
        for statement in node.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                ok, value = _literal(statement.value)
                if ok:
                    values.append(value)
        return values

    def default(self, node: ast.expr) -> tuple[bool, Any]:
        """A parameter's default as JSON, an Enum member as its value."""
        ok, value = _literal(node)
        if ok:
            return ok, value
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            klass = self._classes.get(node.value.id)
            for statement in klass.body if klass else []:
                if (
                    isinstance(statement, ast.Assign)
                    and len(statement.targets) == 1
                    and _name(statement.targets[0]) == node.attr
                ):
                    return _literal(statement.value)
        return False, None

    def of(self, annotation: ast.expr | None, depth: int = 0) -> dict[str, Any]:
        if annotation is None or depth > MAX_DEPTH:
            return {}
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            with contextlib.suppress(SyntaxError, ValueError):
                return self.of(ast.parse(annotation.value, mode="eval").body, depth)
            return {}
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            return self._union([annotation.left, annotation.right], depth)
        if isinstance(annotation, ast.Subscript):
            return self._generic(annotation, depth)
        name = _name(annotation)
        if name in _SCALARS:
            return dict(_SCALARS[name])
        if name in _ARRAYS or name in _TUPLES:
            return {"type": "array"}
        if name in _MAPS:
            return {"type": "object"}
        values = self.enum_values(name)
        if values is not None:
            return self._enum(values)
        return self._record(name, depth)

    def _generic(self, node: ast.Subscript, depth: int) -> dict[str, Any]:
        base = _name(node.value)
        arguments = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Literal":
            values = [v for ok, v in map(_literal, arguments) if ok]
            return self._enum(values)
        if base in _OPTIONALS:
            return self._union([arguments[0], ast.Constant(None)], depth)
        if base in _UNIONS:
            return self._union(arguments, depth)
        if base in _PASS_THROUGH:
            return self.of(arguments[0], depth)
        if base in _ARRAYS:
            items = self.of(arguments[0], depth + 1)
            return {"type": "array", **({"items": items} if items else {})}
        if base in _TUPLES:
            if (
                len(arguments) == 2
                and isinstance(arguments[1], ast.Constant)
                and (arguments[1].value is Ellipsis)
            ):
                items = self.of(arguments[0], depth + 1)
                return {"type": "array", **({"items": items} if items else {})}
            prefix = [self.of(argument, depth + 1) for argument in arguments]
            return {
                "type": "array",
                "prefixItems": prefix,
                "minItems": len(prefix),
                "maxItems": len(prefix),
            }
        if base in _MAPS:
            value = self.of(arguments[-1], depth + 1) if len(arguments) == 2 else {}
            return {"type": "object", **({"additionalProperties": value} if value else {})}
        return self.of(node.value, depth)

    def _union(self, options: list[ast.expr], depth: int) -> dict[str, Any]:
        schemas = [self.of(option, depth) for option in options]
        if not all(schemas):
            return {}
        return {"anyOf": schemas}

    @staticmethod
    def _enum(values: list[Any]) -> dict[str, Any]:
        types = {strictjson.schema_type(value) for value in values}
        schema: dict[str, Any] = {"enum": values}
        if len(types) == 1 and "" not in types:
            schema["type"] = types.pop()
        return schema

    def _record(self, name: str, depth: int) -> dict[str, Any]:
        """A dataclass, TypedDict, pydantic model or NamedTuple of the module, as an object."""
        node = self._classes.get(name)
        if node is None:
            return {}
        dataclass = any(
            _name(d.func if isinstance(d, ast.Call) else d) == "dataclass"
            for d in node.decorator_list
        )
        if not dataclass and not any(_name(base) in _RECORD_BASES for base in node.bases):
            return {}
        total = not any(
            keyword.arg == "total" and _literal(keyword.value) == (True, False)
            for keyword in node.keywords
        )
        properties: dict[str, Any] = {}
        required = []
        for statement in node.body:
            if not isinstance(statement, ast.AnnAssign) or not isinstance(
                statement.target, ast.Name
            ):
                continue
            field = statement.target.id
            schema = self.of(statement.annotation, depth + 1)
            if statement.value is not None:
                ok, value = self.default(statement.value)
                if ok:
                    schema["default"] = value
            elif total:
                required.append(field)
            properties[field] = schema
        schema = {"type": "object", "properties": properties, "required": required}
        if description := _first_paragraph(ast.get_docstring(node)):
            schema["description"] = description
        return schema


def _first_paragraph(docstring: str | None) -> str:
    if not docstring:
        return ""
    return " ".join(docstring.strip().split("\n\n")[0].split())


_ARGS_SECTION = re.compile(r"^\s*(?:Args|Arguments|Parameters)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s+(?P<name>\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(?P<text>.+)$")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(?P<name>\w+)\s*:\s*(?P<text>.+)$")


def parameter_descriptions(docstring: str | None) -> dict[str, str]:
    """Each parameter's description from a Google-style `Args:` section or `:param x:`."""
    found: dict[str, str] = {}
    in_args = False
    for line in (docstring or "").splitlines():
        if sphinx := _SPHINX_PARAM.match(line):
            found[sphinx["name"]] = sphinx["text"].strip()
            continue
        if _ARGS_SECTION.match(line):
            in_args = True
            continue
        if in_args:
            if match := _ARG_LINE.match(line):
                found[match["name"].lstrip("*")] = match["text"].strip()
            elif line.strip() and not line.startswith((" ", "\t")):
                in_args = False
    return found


def describe(tree: ast.Module, function: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Any]:
    """The JSON Schema object of `function`'s parameters."""
    schemas = Schemas(tree)
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    defaults: dict[str, ast.expr] = dict(
        zip([a.arg for a in positional][::-1], arguments.defaults[::-1], strict=False)
    )
    defaults.update(
        {
            a.arg: d
            for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
            if d is not None
        }
    )
    docstring = ast.get_docstring(function)
    described = parameter_descriptions(docstring)
    properties: dict[str, Any] = {}
    for parameter in positional + arguments.kwonlyargs:
        schema = schemas.of(parameter.annotation)
        if parameter.arg in defaults:
            ok, value = schemas.default(defaults[parameter.arg])
            if ok:
                schema["default"] = value
                if parameter.annotation is None:
                    schema = {**_type_of_value(value), **schema}
        if parameter.arg in described:
            schema["description"] = described[parameter.arg]
        properties[parameter.arg] = schema
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": [p for p in properties if p not in defaults],
    }
    if description := _first_paragraph(docstring):
        result["description"] = description
    return result
