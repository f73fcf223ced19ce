"""The entry point of a TypeScript job, read with the tree-sitter TypeScript grammar.

`Describe` gets its parameters as a JSON Schema, and the job message gets their names in
order (the wrapper calls the function positionally) plus which of them need a BigInt or
a Date. What the schema cannot express is `{}` (any value), never a guess:

    number → number            bigint → integer (passed as a BigInt, every digit kept)
    string → string            boolean → boolean
    T[], Array<T> → array of T [A, B] → array with prefixItems
    { a: T; b?: U } and interfaces → object with properties (b not required)
    Record<string, T> → object with additionalProperties T
    "a" | "b", 1 | 2, enums → enum          T | null → anyOf [T, null]
    Date → string, format date-time (passed as a Date)
    a type alias declared in the file → what it stands for
    any, unknown, other names → {}

A parameter without a type takes it from its default (`n = 3` is an integer).
A `/** ... */` comment before the function gives the description, and its `@param name
text` lines the parameters' descriptions.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gristmill.languages import strictjson, syntax

LANGUAGE = syntax.grammar("tree_sitter_typescript", "language_typescript")
_MAX_DEPTH = 16
"""How deep named types are followed (a recursive alias stops here as `{}`)."""
_JSDOC_PARAM = re.compile(
    r"@param\s+(?:\{[^}]*\}\s*)?\[?(?P<name>[A-Za-z_$][\w$]*)[^\s]*\s*-?\s*(?P<text>.*)"
)

Schema = dict[str, Any]


@dataclass(frozen=True)
class Parameter:
    name: str
    schema: Schema
    required: bool
    has_default: bool = False
    default: Any = None
    # What the wrapper builds from the JSON value: "bigint", "date" or "".
    conversion: str = ""


@dataclass(frozen=True)
class Signature:
    # None when a parameter is not a plain name (a destructuring pattern, `...rest`).
    parameters: tuple[Parameter, ...] | None
    description: str = ""
    unnamed: tuple[str, ...] = field(default_factory=tuple)


class _Types:
    """The file's own named types: interfaces, type aliases and enums, by name."""

    def __init__(self, root: syntax.Node) -> None:
        self.declarations: dict[str, syntax.Node] = {}
        for node in _top_level(root):
            if node.type in ("interface_declaration", "type_alias_declaration", "enum_declaration"):
                self.declarations.setdefault(syntax.field_text(node, "name"), node)

    def schema(self, node: syntax.Node | None, depth: int = 0) -> Schema:
        if node is None or depth > _MAX_DEPTH:
            return {}
        kind = node.type
        if kind == "type_annotation":
            return self.schema(node.named_children[0] if node.named_children else None, depth + 1)
        if kind == "parenthesized_type":
            return self.schema(node.named_children[0], depth + 1)
        if kind == "predefined_type":
            return _predefined(syntax.text(node))
        if kind in ("array_type", "readonly_type"):
            inner = self.schema(node.named_children[0], depth + 1)
            if kind == "readonly_type":
                return inner
            return {"type": "array", "items": inner} if inner else {"type": "array"}
        if kind == "tuple_type":
            items = [self.schema(child, depth + 1) for child in node.named_children]
            return {
                "type": "array",
                "prefixItems": items,
                "minItems": len(items),
                "maxItems": len(items),
            }
        if kind in ("object_type", "interface_body"):
            return self._object(node, depth)
        if kind == "literal_type":
            value = _literal(node.named_children[0]) if node.named_children else _NOTHING
            if value is _NOTHING:
                return {}
            return {"type": "null"} if value is None else {"enum": [value]}
        if kind == "union_type":
            return self._union(node, depth)
        if kind == "type_identifier":
            return self._named(syntax.text(node), depth)
        if kind == "generic_type":
            return self._generic(node, depth)
        return {}

    def _object(self, node: syntax.Node, depth: int) -> Schema:
        properties: Schema = {}
        required: list[str] = []
        for member in syntax.children(node, "property_signature"):
            name_node = member.child_by_field_name("name")
            name = _property_name(name_node)
            if name is None:
                continue
            schema = self.schema(member.child_by_field_name("type"), depth + 1)
            if comment := _doc_before(member):
                schema = {**schema, "description": comment}
            properties[name] = schema
            if not any(child.type == "?" for child in member.children):
                required.append(name)
        return {"type": "object", "properties": properties, "required": required}

    def _union(self, node: syntax.Node, depth: int) -> Schema:
        options = [self.schema(child, depth + 1) for child in _union_members(node)]
        nullable = {"type": "null"} in options
        rest = [o for o in options if o != {"type": "null"}]
        if rest and all(set(o) == {"enum"} for o in rest):
            values = [v for o in rest for v in o["enum"]]
            schema: Schema = {"enum": values + ([None] if nullable else [])}
            types = {strictjson.schema_type(v) for v in values}
            if len(types) == 1 and not nullable:
                schema["type"] = types.pop()
            return schema
        if any(not o for o in rest):
            return {}
        if len(rest) == 1:
            return {"anyOf": [rest[0], {"type": "null"}]} if nullable else rest[0]
        return {"anyOf": rest + ([{"type": "null"}] if nullable else [])}

    def _named(self, name: str, depth: int) -> Schema:
        if name == "Date":
            return {"type": "string", "format": "date-time"}
        if name in ("Uint8Array", "Buffer"):
            return {"type": "string", "contentEncoding": "base64"}
        declaration = self.declarations.get(name)
        if declaration is None:
            return {}
        if declaration.type == "type_alias_declaration":
            return self.schema(declaration.child_by_field_name("value"), depth + 1)
        if declaration.type == "interface_declaration":
            return self._object(declaration.child_by_field_name("body") or declaration, depth + 1)
        return {"enum": list(_enum_values(declaration).values())}

    def _generic(self, node: syntax.Node, depth: int) -> Schema:
        name = syntax.field_text(node, "name")
        arguments_node = node.child_by_field_name("type_arguments")
        arguments = list(arguments_node.named_children) if arguments_node else []
        if name in ("Array", "ReadonlyArray") and len(arguments) == 1:
            inner = self.schema(arguments[0], depth + 1)
            return {"type": "array", "items": inner} if inner else {"type": "array"}
        if name == "Record" and len(arguments) == 2:
            values = self.schema(arguments[1], depth + 1)
            return {"type": "object", "additionalProperties": values or True}
        if name in ("Partial", "Readonly", "Required") and len(arguments) == 1:
            inner = self.schema(arguments[0], depth + 1)
            if name == "Partial" and "required" in inner:
                inner = {**inner, "required": []}
            return inner
        return {}


_NOTHING = object()


def _predefined(name: str) -> Schema:
    return {
        "number": {"type": "number"},
        "string": {"type": "string"},
        "boolean": {"type": "boolean"},
        "bigint": {"type": "integer"},
        "null": {"type": "null"},
        "object": {"type": "object"},
    }.get(name, {})


def _union_members(node: syntax.Node) -> Iterator[syntax.Node]:
    """The members of a (left-nested) union, flattened, without recursion."""
    stack = list(reversed(node.named_children))
    while stack:
        child = stack.pop()
        if child.type == "union_type":
            stack.extend(reversed(child.named_children))
        else:
            yield child


def _string(node: syntax.Node) -> str:
    """The value of a string literal (escapes read as JSON would)."""
    raw = syntax.text(node)[1:-1]
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return str(value)


def _literal(node: syntax.Node, depth: int = 0) -> Any:
    """A literal's JSON value, or `_NOTHING` for what is not a literal."""
    kind = node.type
    if depth > _MAX_DEPTH:
        return _NOTHING
    if kind == "string":
        return _string(node)
    if kind == "number":
        text = syntax.text(node).replace("_", "")
        try:
            return int(text, 0)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return _NOTHING
    if kind == "unary_expression" and syntax.field_text(node, "operator") == "-":
        inner = _literal(node.child_by_field_name("argument") or node, depth + 1)
        is_number = isinstance(inner, int | float) and not isinstance(inner, bool)
        return -inner if is_number else _NOTHING
    if kind in ("true", "false"):
        return kind == "true"
    if kind == "null":
        return None
    if kind == "array":
        items = [_literal(child, depth + 1) for child in node.named_children]
        return _NOTHING if any(item is _NOTHING for item in items) else items
    if kind == "object":
        found: dict[str, Any] = {}
        for pair in node.named_children:
            if pair.type != "pair":
                return _NOTHING
            key = _property_name(pair.child_by_field_name("key"))
            value_node = pair.child_by_field_name("value")
            value = _literal(value_node, depth + 1) if value_node else _NOTHING
            if key is None or value is _NOTHING:
                return _NOTHING
            found[key] = value
        return found
    return _NOTHING


def _property_name(node: syntax.Node | None) -> str | None:
    if node is None:
        return None
    if node.type == "string":
        return _string(node)
    if node.type in ("property_identifier", "identifier", "number"):
        return syntax.text(node)
    return None


def _enum_values(declaration: syntax.Node) -> dict[str, Any]:
    """An enum's members and values: given ones, else numbered on from the last."""
    values: dict[str, Any] = {}
    following = 0
    body = declaration.child_by_field_name("body")
    for member in body.named_children if body else []:
        if member.type == "enum_assignment":
            name = _property_name(member.child_by_field_name("name")) or ""
            value_node = member.child_by_field_name("value")
            value = _literal(value_node) if value_node else _NOTHING
            if value is _NOTHING:
                value = name
        elif member.type in ("property_identifier", "string"):
            name = _property_name(member) or ""
            value = following
        else:
            continue
        values[name] = value
        if isinstance(value, int) and not isinstance(value, bool):
            following = value + 1
    return values


def _top_level(root: syntax.Node) -> Iterator[syntax.Node]:
    """Top-level statements, with exported declarations unwrapped."""
    for node in root.named_children:
        if node.type == "export_statement":
            declaration = node.child_by_field_name("declaration")
            if declaration is not None:
                yield declaration
        else:
            yield node


def _doc_before(node: syntax.Node) -> str:
    """The text of a `/** ... */` comment right before `node` (or its export statement)."""
    target = (
        node.parent if node.parent is not None and node.parent.type == "export_statement" else node
    )
    previous = target.prev_sibling
    if previous is None or previous.type != "comment":
        return ""
    text = syntax.text(previous)
    if not text.startswith("/**"):
        return ""
    lines = [line.strip().lstrip("*").strip() for line in text[3:-2].splitlines()]
    return "\n".join(line for line in lines if line).strip()


DEFAULT_ENTRY_POINT = "main"
"""An `export default` function stands for `main` when the file exports none by name."""


def _default_export(root: syntax.Node) -> syntax.Node | None:
    for node in root.named_children:
        if node.type == "export_statement" and any(c.type == "default" for c in node.children):
            found = node.child_by_field_name("declaration") or node.child_by_field_name("value")
            if found is not None and found.type in (
                "function_declaration",
                "function_expression",
                "function",
                "arrow_function",
            ):
                return found
    return None


def _function(root: syntax.Node, name: str) -> syntax.Node | None:
    """The function named `name` at the top level: a declaration, or a const holding an
    arrow function or function expression; for `main`, else the default export."""
    named = _named_function(root, name)
    if named is None and name == DEFAULT_ENTRY_POINT:
        return _default_export(root)
    return named


def _named_function(root: syntax.Node, name: str) -> syntax.Node | None:
    for node in _top_level(root):
        if node.type in ("function_declaration", "generator_function_declaration"):
            if syntax.field_text(node, "name") == name:
                return node
        elif node.type in ("lexical_declaration", "variable_declaration"):
            for declarator in syntax.children(node, "variable_declarator"):
                value = declarator.child_by_field_name("value")
                if (
                    syntax.field_text(declarator, "name") == name
                    and value is not None
                    and value.type in ("arrow_function", "function_expression", "function")
                ):
                    return value
    return None


def _parameter(node: syntax.Node, types: _Types, docs: dict[str, str]) -> Parameter | None:
    pattern = node.child_by_field_name("pattern")
    if pattern is None or pattern.type != "identifier":
        return None
    name = syntax.text(pattern)
    type_node = node.child_by_field_name("type")
    value_node = node.child_by_field_name("value")
    schema = types.schema(type_node)
    default = _literal(value_node) if value_node is not None else _NOTHING
    if type_node is None and default is not _NOTHING and default is not None:
        schema = {"type": strictjson.schema_type(default)}
        if isinstance(default, list):
            schema = {"type": "array"}
        elif isinstance(default, dict):
            schema = {"type": "object"}
    if value_node is not None and default is _NOTHING:
        enum_default = _enum_member(value_node, types)
        if enum_default is not _NOTHING:
            default = enum_default
    schema = dict(schema)
    if default is not _NOTHING:
        schema["default"] = default
    if docs.get(name):
        schema["description"] = docs[name]
    annotation = syntax.text(type_node).lstrip(":").strip() if type_node is not None else ""
    conversion = {"bigint": "bigint", "Date": "date"}.get(annotation, "")
    optional = node.type == "optional_parameter" or value_node is not None
    return Parameter(
        name=name,
        schema=schema,
        required=not optional,
        has_default=default is not _NOTHING,
        default=None if default is _NOTHING else default,
        conversion=conversion,
    )


def _enum_member(node: syntax.Node, types: _Types) -> Any:
    """`Color.Red` as a default: the member's value."""
    if node.type != "member_expression":
        return _NOTHING
    declaration = types.declarations.get(syntax.field_text(node, "object"))
    if declaration is None or declaration.type != "enum_declaration":
        return _NOTHING
    return _enum_values(declaration).get(syntax.field_text(node, "property"), _NOTHING)


@functools.lru_cache(maxsize=128)
def signature(code: str, entry_point: str, *, field: str = "code") -> Signature | None:
    """The entry point's signature; None when the code has no such function. Raises
    `InvalidRequest` on `field` for code that does not parse. Remembered for the last
    codes seen: a queue sends the same script again and again, and every job asks."""
    root = syntax.parse(LANGUAGE, code, field=field)
    function = _function(root, entry_point)
    if function is None:
        return None
    anchor = function if function.type != "arrow_function" else function.parent
    description = (
        _doc_before(
            anchor.parent
            if anchor and anchor.type == "variable_declarator" and anchor.parent
            else function
        )
        if anchor
        else ""
    )
    docs: dict[str, str] = {}
    kept: list[str] = []
    for line in description.splitlines():
        match = _JSDOC_PARAM.match(line)
        if match:
            docs[match["name"]] = match["text"].strip()
        elif not line.startswith("@"):
            kept.append(line)
    types = _Types(root)
    formal = function.child_by_field_name("parameters")
    if formal is None:
        # `x => ...`: a single untyped parameter.
        single = function.child_by_field_name("parameter")
        if single is None:
            return Signature((), "\n".join(kept))
        return Signature((Parameter(syntax.text(single), {}, True),), "\n".join(kept))
    parameters: list[Parameter] = []
    unnamed: list[str] = []
    for node in syntax.children(formal, "required_parameter", "optional_parameter"):
        parameter = _parameter(node, types, docs)
        if parameter is None:
            unnamed.append(syntax.text(node))
        else:
            parameters.append(parameter)
    return Signature(None if unnamed else tuple(parameters), "\n".join(kept), tuple(unnamed))


def schema(sig: Signature) -> Schema:
    """The JSON Schema object of a signature's parameters."""
    parameters = sig.parameters or ()
    document: Schema = {
        "type": "object",
        "properties": {p.name: copy.deepcopy(p.schema) for p in parameters},
        "required": [p.name for p in parameters if p.required],
    }
    if sig.description:
        document["description"] = sig.description
    return document
