"""The JSON Schema of a Java job's entry point, read with tree-sitter-java (never compiled):
which class holds the public static method the job names, its parameters by name with
their declared types (boxed and primitive numbers, strings, collections, maps, records,
enums and classes of the code, `Optional` for what may be left out), and the
descriptions of its Javadoc."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import tree_sitter

from gristmill.languages import InvalidRequest, syntax

_INTEGERS = {"Integer", "Long", "Short", "Byte", "BigInteger", "AtomicInteger", "AtomicLong"}
_NUMBERS = {"Double", "Float", "BigDecimal", "Number"}
_ARRAYS = {"List", "ArrayList", "LinkedList", "Collection", "Iterable", "Set", "HashSet",
           "LinkedHashSet", "TreeSet", "SortedSet"}  # fmt: skip
_MAPS = {"Map", "HashMap", "LinkedHashMap", "TreeMap", "SortedMap"}
_FORMATS = {
    "LocalDate": "date",
    "LocalDateTime": "date-time",
    "OffsetDateTime": "date-time",
    "ZonedDateTime": "date-time",
    "Instant": "date-time",
    "LocalTime": "time",
    "UUID": "uuid",
}


def _grammar() -> tree_sitter.Language:
    return syntax.grammar("tree_sitter_java")


def lenient_tree(code: str) -> syntax.Node:
    """The tree even of code that does not parse: javac reports that in its own words."""
    return tree_sitter.Parser(_grammar()).parse(code.encode("utf-8", "surrogatepass")).root_node


@dataclass(frozen=True)
class Entry:
    """The entry point as the code declares it."""

    # The binary name of its class, e.g. "Main" or "com.acme.Job".
    class_name: str
    # The name the file must have for javac: its public top-level type's, else the class's.
    file_stem: str
    method: syntax.Node | None
    types: Mapping[str, syntax.Node]


def _modifiers(node: syntax.Node) -> set[str]:
    found = next(syntax.children(node, "modifiers"), None)
    return set(syntax.text(found).split()) if found is not None else set()


def _types(node: syntax.Node, prefix: str = "") -> Iterator[tuple[str, syntax.Node]]:
    """Every type declared in `node` by its simple name, nested ones included (no recursion
    into method bodies), iteratively."""
    stack = [node]
    while stack:
        current = stack.pop()
        for child in syntax.children(current):
            if child.type in (
                "class_declaration",
                "record_declaration",
                "enum_declaration",
                "interface_declaration",
            ):
                yield syntax.field_text(child, "name"), child
                body = child.child_by_field_name("body")
                if body is not None:
                    stack.append(body)


def _is_classic_main(method: syntax.Node) -> bool:
    parameters = [
        p
        for p in syntax.children(method.child_by_field_name("parameters") or method)
        if p.type in ("formal_parameter", "spread_parameter")
    ]
    if len(parameters) != 1:
        return False
    text = re.sub(r"\s+", "", syntax.text(parameters[0]))
    return text.startswith(("String[]", "String...", "java.lang.String[]"))


def find_entry(root: syntax.Node, entry_point: str) -> Entry | None:
    """The top-level class with a public static method named `entry_point` (not the classic
    `main(String[])`); None when there is none."""
    package = next(syntax.children(root, "package_declaration"), None)
    prefix = ""
    if package is not None:
        package_name = next(syntax.children(package, "scoped_identifier", "identifier"), None)
        prefix = f"{syntax.text(package_name)}." if package_name is not None else ""
    types = dict(_types(root))
    public_stem = ""
    for declaration in syntax.children(root, "class_declaration", "record_declaration",
                                       "enum_declaration", "interface_declaration"):  # fmt: skip
        if "public" in _modifiers(declaration) and not public_stem:
            public_stem = syntax.field_text(declaration, "name")
    for declaration in syntax.children(root, "class_declaration"):
        name = syntax.field_text(declaration, "name")
        body = declaration.child_by_field_name("body")
        if body is None:
            continue
        for method in syntax.children(body, "method_declaration"):
            modifiers = _modifiers(method)
            if (
                syntax.field_text(method, "name") == entry_point
                and {"public", "static"} <= modifiers
                and not _is_classic_main(method)
            ):
                return Entry(f"{prefix}{name}", public_stem or name, method, types)
    return None


def parameters(method: syntax.Node) -> list[tuple[str, syntax.Node | None, bool]]:
    """(name, type node, varargs) of each parameter."""
    found: list[tuple[str, syntax.Node | None, bool]] = []
    parameters = method.child_by_field_name("parameters")
    if parameters is None:
        return found
    for parameter in syntax.children(parameters, "formal_parameter", "spread_parameter"):
        if parameter.type == "formal_parameter":
            found.append(
                (
                    syntax.field_text(parameter, "name"),
                    parameter.child_by_field_name("type"),
                    False,
                )
            )
        else:
            declarator = next(syntax.children(parameter, "variable_declarator"), None)
            name = syntax.field_text(declarator, "name") if declarator is not None else ""
            kind = next((c for c in parameter.named_children if c.type not in ("modifiers",)), None)
            found.append((name, kind, True))
    return found


def _simple(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def is_optional(kind: syntax.Node | None) -> bool:
    """Whether a parameter's type is `Optional<T>`: the one kind of parameter a job may omit."""
    if kind is None or kind.type != "generic_type":
        return False
    return _simple(syntax.text(kind).split("<", 1)[0].strip()) == "Optional"


class _Schemas:
    """JSON Schemas of Java types, the file's own enums, records and classes included."""

    def __init__(self, types: Mapping[str, syntax.Node]) -> None:
        self.types = types
        self.open: set[str] = set()

    def of(self, node: syntax.Node | None, depth: int = 0) -> dict[str, Any]:
        if node is None or depth > 32:
            return {}
        kind = node.type
        if kind == "integral_type":
            return {"type": "string"} if syntax.text(node) == "char" else {"type": "integer"}
        if kind == "floating_point_type":
            return {"type": "number"}
        if kind == "boolean_type":
            return {"type": "boolean"}
        if kind == "array_type":
            element = node.child_by_field_name("element")
            if syntax.text(element) == "byte":
                return {"type": "string", "contentEncoding": "base64"}
            return {"type": "array", "items": self.of(element, depth + 1)}
        if kind == "generic_type":
            base = next(syntax.children(node, "type_identifier", "scoped_type_identifier"), None)
            arguments = next(syntax.children(node, "type_arguments"), None)
            parts = list(arguments.named_children) if arguments is not None else []
            name = _simple(syntax.text(base))
            if name == "Optional" and parts:
                inner = self.of(parts[0], depth + 1)
                return {"anyOf": [inner, {"type": "null"}]} if inner else {}
            if name in _ARRAYS:
                schema: dict[str, Any] = {"type": "array"}
                if parts and (items := self.of(parts[0], depth + 1)):
                    schema["items"] = items
                if name.endswith("Set"):
                    schema["uniqueItems"] = True
                return schema
            if name in _MAPS:
                schema = {"type": "object"}
                if len(parts) == 2 and (values := self.of(parts[1], depth + 1)):
                    schema["additionalProperties"] = values
                return schema
            return self.named(name, depth)
        if kind in ("type_identifier", "scoped_type_identifier"):
            return self.named(_simple(syntax.text(node)), depth)
        return {}

    def named(self, name: str, depth: int) -> dict[str, Any]:
        if name in ("String", "CharSequence", "Character", "char"):
            return {"type": "string"}
        if name in _INTEGERS:
            return {"type": "integer"}
        if name in _NUMBERS:
            return {"type": "number"}
        if name == "Boolean":
            return {"type": "boolean"}
        if name in _FORMATS:
            return {"type": "string", "format": _FORMATS[name]}
        if name in _ARRAYS:
            return {"type": "array"}
        if name in _MAPS:
            return {"type": "object"}
        declaration = self.types.get(name)
        if declaration is None or name in self.open:
            return {}
        self.open.add(name)
        try:
            return self.declared(name, declaration, depth)
        finally:
            self.open.discard(name)

    def declared(self, name: str, declaration: syntax.Node, depth: int) -> dict[str, Any]:
        if declaration.type == "enum_declaration":
            body = declaration.child_by_field_name("body")
            constants = [
                syntax.field_text(c, "name")
                for c in (syntax.children(body, "enum_constant") if body is not None else ())
            ]
            return {"type": "string", "enum": constants}
        properties: dict[str, Any] = {}
        if declaration.type == "record_declaration":
            parameters = declaration.child_by_field_name("parameters")
            for component in syntax.children(parameters or declaration, "formal_parameter"):
                component_type = component.child_by_field_name("type")
                properties[syntax.field_text(component, "name")] = self.of(
                    component_type, depth + 1
                )
            return {
                "type": "object",
                "title": name,
                "properties": properties,
                "required": list(properties),
            }
        if declaration.type == "class_declaration":
            body = declaration.child_by_field_name("body")
            for field in syntax.children(body, "field_declaration") if body is not None else ():
                modifiers = _modifiers(field)
                if "public" not in modifiers or "static" in modifiers or "final" in modifiers:
                    continue
                field_type = field.child_by_field_name("type")
                for declarator in syntax.children(field, "variable_declarator"):
                    properties[syntax.field_text(declarator, "name")] = self.of(
                        field_type, depth + 1
                    )
            return {"type": "object", "title": name, "properties": properties}
        return {}


def _javadoc(method: syntax.Node) -> tuple[str, dict[str, str]]:
    """The method's doc comment: its description and `@param` texts."""
    previous = method.prev_named_sibling
    if previous is None or previous.type != "block_comment":
        return "", {}
    text = syntax.text(previous)
    if not text.startswith("/**"):
        return "", {}
    lines = [re.sub(r"^\s*\*\s?", "", line) for line in text[3:-2].splitlines()]
    description: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        tag = re.match(r"@param\s+(\w+)\s*(.*)", line.strip())
        if tag:
            current = tag[1]
            params[current] = tag[2]
        elif line.strip().startswith("@"):
            current = ""
        elif current:
            params[current] = f"{params[current]} {line.strip()}".strip()
        elif current is None:
            description.append(line.strip())
    return " ".join(d for d in description if d), params


def parsed_entry(code: str, entry_point: str) -> Entry:
    root = syntax.parse(_grammar(), code)
    entry = find_entry(root, entry_point)
    if entry is None:
        raise InvalidRequest(
            "entry_point",
            f"the code has no class with a public static method {entry_point!r} "
            "(other than main(String[]))",
        )
    return entry


def schema(code: str, entry_point: str) -> dict[str, Any]:
    """The entry point's parameters as a JSON Schema object, described by its Javadoc."""
    entry = parsed_entry(code, entry_point)
    assert entry.method is not None
    schemas = _Schemas(entry.types)
    description, documented = _javadoc(entry.method)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, kind, varargs in parameters(entry.method):
        parameter = schemas.of(kind)
        if varargs:
            parameter = {"type": "array", **({"items": parameter} if parameter else {})}
        if documented.get(name):
            parameter = {**parameter, "description": documented[name]}
        properties[name] = parameter
        if not is_optional(kind):
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if description:
        schema["description"] = description
    return schema
