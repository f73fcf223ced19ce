"""The JSON Schema of a Go job's entry point, read with tree-sitter-go (never compiled):
the function the job names in its package, its parameters by name with their types
(scalars, slices, maps, structs of the code with their JSON names, pointers for what
may be left out, constants of a named type as its enum), described by doc comments."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import tree_sitter

from gristmill.languages import syntax

_SCALARS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "float32": {"type": "number"},
    "float64": {"type": "number"},
    "any": {},
    "interface{}": {},
    "time.Time": {"type": "string", "format": "date-time"},
    "time.Duration": {"type": "integer"},
    "json.RawMessage": {},
}
for _int in ("int", "int8", "int16", "int32", "int64", "uint", "uint16", "uint32", "uint64"):
    _SCALARS[_int] = {"type": "integer"}
_SCALARS["byte"] = _SCALARS["uint8"] = _SCALARS["rune"] = {"type": "integer"}


def language() -> tree_sitter.Language:
    return syntax.grammar("tree_sitter_go")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: syntax.Node


def tree(code: str) -> syntax.Node:
    """The syntax tree, errors and all: the compiler, not us, reports what does not parse."""
    return tree_sitter.Parser(language()).parse(code.encode("utf-8", "surrogatepass")).root_node


def function(root: syntax.Node, entry_point: str) -> syntax.Node | None:
    for node in syntax.children(root, "function_declaration"):
        if syntax.field_text(node, "name") == entry_point:
            return node
    return None


def parameters(function: syntax.Node) -> list[Parameter]:
    found: list[Parameter] = []
    parameter_list = function.child_by_field_name("parameters")
    if parameter_list is None:
        return found
    for declaration in syntax.children(parameter_list):
        kind = declaration.child_by_field_name("type")
        if kind is None:
            continue
        for name in declaration.children_by_field_name("name"):
            found.append(Parameter(syntax.text(name), kind))
    return found


def _comment_before(node: syntax.Node) -> str:
    lines: list[str] = []
    previous = node.prev_named_sibling
    while previous is not None and previous.type == "comment":
        if previous.end_point[0] + 1 + len(lines) < node.start_point[0] - 0:
            break
        lines.insert(0, syntax.text(previous).removeprefix("//").strip())
        previous = previous.prev_named_sibling
    return " ".join(lines)


class _Schemas:
    """JSON Schemas of Go types, named types looked up in the file's declarations."""

    def __init__(self, root: syntax.Node) -> None:
        self.types: dict[str, syntax.Node] = {}
        for declaration in syntax.children(root, "type_declaration"):
            for spec in syntax.children(declaration, "type_spec"):
                kind = spec.child_by_field_name("type")
                if kind is not None:
                    self.types[syntax.field_text(spec, "name")] = kind
        self.constants = self._constants(root)

    @staticmethod
    def _constants(root: syntax.Node) -> dict[str, list[Any]]:
        """Typed constants by type name: `const (A Color = "a"; ...)` makes an enum."""
        found: dict[str, list[Any]] = {}
        for declaration in syntax.children(root, "const_declaration"):
            for spec in syntax.children(declaration, "const_spec"):
                kind, value = spec.child_by_field_name("type"), spec.child_by_field_name("value")
                if kind is None or value is None:
                    continue
                try:
                    literal = json.loads(syntax.text(value))
                except ValueError:
                    continue
                found.setdefault(syntax.text(kind), []).append(literal)
        return found

    def of(self, node: syntax.Node, depth: int = 0) -> dict[str, Any]:
        if depth > 16:
            return {}
        text = syntax.text(node)
        if text in _SCALARS:
            return dict(_SCALARS[text])
        if node.type == "pointer_type":
            inner = node.named_children[0] if node.named_children else None
            return self.of(inner, depth + 1) if inner is not None else {}
        if node.type == "slice_type" or node.type == "array_type":
            element = node.child_by_field_name("element")
            if element is not None and syntax.text(element) == "byte":
                return {"type": "string", "contentEncoding": "base64"}
            items = self.of(element, depth + 1) if element is not None else {}
            return {"type": "array", "items": items} if items else {"type": "array"}
        if node.type == "map_type":
            value = node.child_by_field_name("value")
            values = self.of(value, depth + 1) if value is not None else {}
            if not values:
                return {"type": "object"}
            return {"type": "object", "additionalProperties": values}
        if node.type == "struct_type":
            return self._struct(node, depth)
        if node.type == "type_identifier" and text in self.types:
            schema = self.of(self.types[text], depth + 1)
            if text in self.constants:
                schema["enum"] = self.constants[text]
            return schema
        return {}

    def _struct(self, node: syntax.Node, depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        fields = next(iter(syntax.children(node, "field_declaration_list")), None)
        for declaration in syntax.children(fields, "field_declaration") if fields else ():
            kind = declaration.child_by_field_name("type")
            tag = syntax.field_text(declaration, "tag").strip("`")
            json_tag = re.search(r'json:"([^"]*)"', tag)
            options = json_tag[1].split(",") if json_tag else [""]
            for name_node in declaration.children_by_field_name("name"):
                name = syntax.text(name_node)
                if not name[:1].isupper() or options[0] == "-":
                    continue
                key = options[0] or name
                properties[key] = self.of(kind, depth + 1) if kind is not None else {}
                if "omitempty" not in options and kind is not None and kind.type != "pointer_type":
                    required.append(key)
        return {"type": "object", "properties": properties, "required": required}


def schema(code: str, entry_point: str) -> dict[str, Any]:
    """The entry point's parameters as a JSON Schema object, described by its doc comment;
    no parameters when the code has no such function (the build reports it)."""
    root = syntax.parse(language(), code)
    entry = function(root, entry_point)
    if entry is None:
        return {"type": "object", "properties": {}, "required": []}
    schemas = _Schemas(root)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in parameters(entry):
        properties[parameter.name] = schemas.of(parameter.type)
        if parameter.type.type != "pointer_type":
            required.append(parameter.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if description := _comment_before(entry):
        schema["description"] = description
    return schema
