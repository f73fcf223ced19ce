"""The JSON Schema of a C# job's parameters, read with tree-sitter's C# grammar.

The entry point is a public static method of a public class, named as the job says,
whose parameters are not `string[]` (the wrapper's rule too). Types map as the wrapper
converts them: integral types to integers, `float`/`double`/`decimal` to numbers, `bool`,
`string` and `char`; `DateTime`/`DateTimeOffset` to date-time strings, `Guid` to uuid
strings, `byte[]` to base64 strings; arrays, `List<T>` and the other list interfaces to
arrays of their items; `Dictionary<string, T>` to objects of T; enums of the code to
their members' names; classes and structs of the code to objects of their public fields
and properties; `T?` to T or null. A default value makes a parameter optional and is
given as `default`. `///` doc comments give descriptions: `<summary>` the method's,
`<param name="x">` each parameter's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from typing import Any

from gristmill.languages import InvalidRequest, syntax
from gristmill.languages.syntax import Node

from .resolver import REFERENCE

_INTEGERS = {"int", "long", "short", "byte", "sbyte", "uint", "ulong", "ushort", "BigInteger"}
_INTEGERS |= {"Int32", "Int64", "Int16", "Byte", "SByte", "UInt32", "UInt64", "UInt16"}
_NUMBERS = {"float", "double", "decimal", "Single", "Double", "Decimal"}
_STRINGS = {"string", "char", "String", "Char", "TimeSpan"}
_FORMATS = {"DateTime": "date-time", "DateTimeOffset": "date-time", "Guid": "uuid"}
_LISTS = {"List", "IList", "IEnumerable", "ICollection", "IReadOnlyList"}
_LISTS |= {"IReadOnlyCollection", "HashSet", "ISet"}
_MAPS = {"Dictionary", "IDictionary", "IReadOnlyDictionary"}
_TYPES = ("class_declaration", "struct_declaration", "enum_declaration")
_MAX_DEPTH = 8


def _walk(root: Node) -> Iterator[Node]:
    """Every node under `root`, without recursion (the tree may be deep)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.named_children))


def _modifiers(node: Node) -> set[str]:
    return {syntax.text(child) for child in syntax.children(node, "modifier")}


class _Types:
    """The enums, classes and structs the code declares, by simple name."""

    def __init__(self, root: Node) -> None:
        self.enums: dict[str, list[str]] = {}
        self.records: dict[str, Node] = {}
        for node in _walk(root):
            if node.type == "enum_declaration":
                body = node.child_by_field_name("body")
                members = syntax.children(body, "enum_member_declaration") if body else iter(())
                self.enums[syntax.field_text(node, "name")] = [
                    syntax.field_text(m, "name") or syntax.text(m.named_children[0])
                    for m in members
                ]
            elif node.type in _TYPES:
                self.records.setdefault(syntax.field_text(node, "name"), node)

    def members(self, declaration: Node) -> Iterator[tuple[str, Node]]:
        """Public instance fields and settable properties: (name, type node)."""
        body = declaration.child_by_field_name("body")
        for member in syntax.children(body) if body else iter(()):
            modifiers = _modifiers(member)
            if "public" not in modifiers or "static" in modifiers or "const" in modifiers:
                continue
            if member.type == "field_declaration":
                declaration_node = next(syntax.children(member, "variable_declaration"), None)
                if declaration_node is None:
                    continue
                kind = declaration_node.child_by_field_name("type")
                for declarator in syntax.children(declaration_node, "variable_declarator"):
                    if kind is not None:
                        yield syntax.field_text(declarator, "name"), kind
            elif member.type == "property_declaration":
                kind = member.child_by_field_name("type")
                if kind is not None:
                    yield syntax.field_text(member, "name"), kind


def _last_name(node: Node) -> str:
    if node.type == "qualified_name":
        name = node.child_by_field_name("name") or node.named_children[-1]
        return _last_name(name)
    if node.type == "generic_name":
        return syntax.text(node.named_children[0])
    return syntax.text(node)


def _schema(node: Node, types: _Types, depth: int = 0) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        return {}
    if node.type == "nullable_type":
        inner = _schema(node.named_children[0], types, depth + 1)
        return {"anyOf": [inner, {"type": "null"}]} if inner else {}
    if node.type == "array_type":
        element = node.child_by_field_name("type") or node.named_children[0]
        if syntax.text(element) == "byte":
            return {"type": "string", "contentEncoding": "base64"}
        items = _schema(element, types, depth + 1)
        return {"type": "array", **({"items": items} if items else {})}
    name = _last_name(node)
    if name in _INTEGERS:
        return {"type": "integer"}
    if name in _NUMBERS:
        return {"type": "number"}
    if name in ("bool", "Boolean"):
        return {"type": "boolean"}
    if name in _STRINGS:
        return {"type": "string"}
    if name in _FORMATS:
        return {"type": "string", "format": _FORMATS[name]}
    if node.type == "generic_name":
        arguments = list(syntax.children(node.named_children[-1]))
        if name == "Nullable" and arguments:
            inner = _schema(arguments[0], types, depth + 1)
            return {"anyOf": [inner, {"type": "null"}]} if inner else {}
        if name in _LISTS and arguments:
            items = _schema(arguments[0], types, depth + 1)
            return {"type": "array", **({"items": items} if items else {})}
        if name in _MAPS and len(arguments) == 2:
            values = _schema(arguments[1], types, depth + 1)
            return {"type": "object", **({"additionalProperties": values} if values else {})}
        return {}
    if name in types.enums:
        return {"type": "string", "enum": types.enums[name]}
    if name in types.records:
        properties = {
            member: _schema(kind, types, depth + 1)
            for member, kind in types.members(types.records[name])
        }
        return {"type": "object", "properties": properties}
    return {}


def _number(text: str) -> int | float | None:
    digits = text.replace("_", "").rstrip("uUlLfFdDmM")
    try:
        if digits.lower().startswith("0x"):
            return int(digits, 16)
        if digits.lower().startswith("0b"):
            return int(digits, 2)
        return int(digits) if text.rstrip("uUlL").replace("_", "").isdigit() else float(digits)
    except ValueError:
        return None


_NO_DEFAULT = object()


def _default(node: Node, types: _Types) -> object:
    """The JSON value of a default written as a literal; `_NO_DEFAULT` for any other."""
    kind = node.type
    if kind == "null_literal":
        return None
    if kind == "boolean_literal":
        return syntax.text(node) == "true"
    if kind in ("integer_literal", "real_literal"):
        value = _number(syntax.text(node))
        return _NO_DEFAULT if value is None else value
    if kind == "prefix_unary_expression" and syntax.text(node).startswith("-"):
        negated = _default(node.named_children[-1], types)
        return -negated if isinstance(negated, int | float) else _NO_DEFAULT
    if kind == "string_literal" and not syntax.text(node).startswith(("@", "$")):
        parts = list(syntax.children(node))
        if all(p.type == "string_literal_content" for p in parts):
            return "".join(syntax.text(p) for p in parts)
    if kind == "character_literal":
        return syntax.text(node)[1:-1]
    if kind == "member_access_expression":
        owner, member = syntax.field_text(node, "expression"), syntax.field_text(node, "name")
        if member in types.enums.get(owner.rsplit(".", 1)[-1], []):
            return member
    return _NO_DEFAULT


def _documentation(method: Node) -> tuple[str, dict[str, str]]:
    """The `///` comment above `method`: its summary and its parameters' descriptions."""
    lines: list[str] = []
    sibling = method.prev_named_sibling
    while (
        sibling is not None and sibling.type == "comment" and syntax.text(sibling).startswith("///")
    ):
        lines.insert(0, syntax.text(sibling)[3:])
        sibling = sibling.prev_named_sibling
    if not lines:
        return "", {}
    try:
        document = ElementTree.fromstring(f"<doc>{''.join(lines)}</doc>")
    except ElementTree.ParseError:
        return "", {}

    def flat(element: ElementTree.Element | None) -> str:
        return " ".join("".join(element.itertext()).split()) if element is not None else ""

    parameters = {p.get("name", ""): flat(p) for p in document.iter("param")}
    return flat(document.find("summary")), parameters


def _entry_point(root: Node, entry_point: str) -> Node:
    for node in _walk(root):
        if node.type != "method_declaration" or syntax.field_text(node, "name") != entry_point:
            continue
        owner = node.parent.parent if node.parent is not None else None
        if not {"public", "static"} <= _modifiers(node):
            continue
        if owner is None or "public" not in _modifiers(owner):
            continue
        parameters = list(syntax.children(node.child_by_field_name("parameters") or node))
        parameters = [p for p in parameters if p.type == "parameter"]
        if len(parameters) == 1 and syntax.field_text(parameters[0], "type") == "string[]":
            continue
        return node
    raise InvalidRequest(
        "entry_point",
        f"the code defines no public static method {entry_point!r} in a public class",
    )


def schema(code: str, entry_point: str) -> Mapping[str, Any]:
    # `#r "nuget: ..."` lines are the resolver's, not C#: blanked (lines keep their numbers).
    lines = code.split("\n")
    cleaned = "\n".join("" if REFERENCE.match(line) else line for line in lines)
    root = syntax.parse(syntax.grammar("tree_sitter_c_sharp"), cleaned)
    types = _Types(root)
    method = _entry_point(root, entry_point)
    summary, described = _documentation(method)
    properties: dict[str, Any] = {}
    required = []
    parameter_list = method.child_by_field_name("parameters")
    for parameter in syntax.children(parameter_list, "parameter") if parameter_list else ():
        name = syntax.field_text(parameter, "name")
        kind = parameter.child_by_field_name("type")
        property_schema = _schema(kind, types) if kind is not None else {}
        extra = [
            c
            for c in parameter.named_children
            if c not in (kind, parameter.child_by_field_name("name"))
            and c.type not in ("modifier", "attribute_list", "parameter_modifier")
        ]
        if extra:
            default = _default(extra[-1], types)
            if default is not _NO_DEFAULT:
                property_schema["default"] = default
        else:
            required.append(name)
        if described.get(name):
            property_schema["description"] = described[name]
        properties[name] = property_schema
    result: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if summary:
        result["description"] = summary
    return result
