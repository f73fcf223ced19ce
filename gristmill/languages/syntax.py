"""A real parser for what languages read from a job's code (`describe`, argument checks).

Each language names its tree-sitter grammar (a PyPI package such as `tree_sitter_go`);
this module parses with it under the service's bounds, so that every language treats
hostile input the same way: code over `MAX_SOURCE_BYTES` or code the grammar cannot
parse is an `InvalidRequest` naming the field and the first bad line, never a crash.
tree-sitter parses iteratively, so deep nesting cannot exhaust the service's stack.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator

import tree_sitter

from gristmill.errors import InvalidRequest

__all__ = [
    "MAX_SOURCE_BYTES",
    "Node",
    "children",
    "field_text",
    "grammar",
    "parse",
    "text",
    "walk",
]

MAX_SOURCE_BYTES = 4 * 1024 * 1024
"""The most code a parser reads; a job's code is capped below this by the server anyway."""

Node = tree_sitter.Node


@functools.cache
def grammar(module: str, function: str = "language") -> tree_sitter.Language:
    """The grammar a package exports, e.g. `grammar("tree_sitter_typescript",
    "language_typescript")`, loaded once per process."""
    return tree_sitter.Language(getattr(importlib.import_module(module), function)())


def parse(
    language: tree_sitter.Language, code: str, *, field: str = "code", tolerant: bool = False
) -> Node:
    """The syntax tree of `code`; an `InvalidRequest` on `field` if it does not parse,
    unless `tolerant` (for a grammar that lags behind its language: the tree then holds
    ERROR nodes where it could not follow, and the rest as parsed)."""
    source = code.encode("utf-8", "surrogatepass")
    if len(source) > MAX_SOURCE_BYTES:
        raise InvalidRequest(field, f"is {len(source)} bytes; at most {MAX_SOURCE_BYTES} parse")
    root = tree_sitter.Parser(language).parse(source).root_node
    if root.has_error and not tolerant:
        bad = _first_error(root)
        line = bad.start_point[0] + 1 if bad is not None else 1
        raise InvalidRequest(field, f"does not parse: syntax error at line {line}")
    return root


def _first_error(node: Node) -> Node | None:
    """The first ERROR or MISSING node in document order, found without recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            return current
        if current.has_error:
            stack.extend(reversed(current.children))
    return None


def text(node: Node | None) -> str:
    """The source text of `node` ("" for none)."""
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "replace")


def field_text(node: Node, name: str) -> str:
    """The text of `node`'s child in field `name` ("" when it has none)."""
    return text(node.child_by_field_name(name))


def walk(node: Node) -> Iterator[Node]:
    """`node` and every node below it, in document order, without recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def children(node: Node, *types: str) -> Iterator[Node]:
    """`node`'s named children, only those of `types` when any are given."""
    return (child for child in node.named_children if not types or child.type in types)
