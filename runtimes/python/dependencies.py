"""What a Python job needs: PEP 723 inline script metadata, else its imports.

In order of authority:

1. A `# /// script` block (PEP 723) with `dependencies = [...]`: exactly those,
   DECLARED. Its `requires-python` becomes a dependency named "python" that the lock
   step checks against the interpreter jobs run on.
2. Otherwise the imports, read with `ast` (never run): the standard library, relative
   imports and the job's own modules dropped, import names mapped to distributions by
   `distributions.toml`, INFERRED. A comment on the import's line replaces what it
   infers: `import yaml  # gristmill: pyyaml==6.0.1` (several: separate them by commas).

Either way a requirement names a package of the configured index, with extras,
versions and markers, and nothing else: no URL, path or option (`_requirement`).
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from gristmill.languages import Dependency, DependencyFailure, DependencySource

PYTHON = "python"
"""The name of the dependency that stands for `requires-python`."""

_METADATA = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
_OVERRIDE = re.compile(r"#\s*gristmill:\s*(?P<requirements>.+?)\s*$")
# What a normalised requirement without a URL may contain: no `#`, `\`, `/`, `:` or
# `@`, so no comment, continuation, path or URL, even inside a marker's quotes.
_PLAIN = re.compile(r"[A-Za-z0-9 ._+*!<>=~,;()\[\]\"'-]+")
_TABLE = tomllib.loads((Path(__file__).parent / "distributions.toml").read_text())
DISTRIBUTIONS: dict[str, str] = _TABLE["distributions"]
"""Import name (possibly dotted) → distribution name, for the names that differ."""
# The job's own module is "main"; the wrapper is no package either.
_NOT_PACKAGES = frozenset(sys.stdlib_module_names) | {"__future__", "main"}


def _requirement(text: str, where: str) -> Requirement:
    """`text` as a requirement on a package of the configured index, or `DependencyFailure`.

    Only `name[extras] specifier ; marker` is accepted: a direct reference (`name @
    https://...`, `file:`, `git+`) would fetch code from wherever the job likes,
    loopback and the service's own network included, and an archive that is not a
    wheel runs its build code while it is resolved. The lock step writes the
    requirement as a line of a requirements file, so its text (free only in the
    marker's quoted values) must also hold nothing that file could read as a comment,
    a continuation, a path or an option.
    """
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        raise DependencyFailure(f"{where}: {text!r} is not a valid requirement: {error}") from error
    if requirement.url is not None:
        raise DependencyFailure(
            f"{where}: {text!r} names a URL; requirements may only name packages of the "
            "configured index"
        )
    if not _PLAIN.fullmatch(str(requirement)):
        raise DependencyFailure(
            f"{where}: {text!r} holds characters a requirement here may not have "
            "(a package of the configured index, with extras, versions and markers)"
        )
    return requirement


def _dependency(text: str, source: DependencySource, where: str) -> Dependency:
    requirement = _requirement(text, where)
    return Dependency(canonicalize_name(requirement.name), str(requirement), source, where)


def script_metadata(code: str) -> tuple[dict[str, object], int] | None:
    """The PEP 723 `script` block as TOML, with the line it starts on; None if there is none."""
    blocks = [m for m in _METADATA.finditer(code) if m["type"] == "script"]
    if not blocks:
        return None
    line = code.count("\n", 0, blocks[0].start()) + 1
    if len(blocks) > 1:
        raise DependencyFailure(f"line {line}: more than one `# /// script` block")
    content = "".join(
        text[2:] if text.startswith("# ") else text[1:]
        for text in blocks[0]["content"].splitlines(keepends=True)
    )
    try:
        return tomllib.loads(content), line
    except tomllib.TOMLDecodeError as error:
        raise DependencyFailure(f"the script metadata at line {line}: {error}") from error


def declared(metadata: dict[str, object], line: int, code: str = "") -> list[Dependency]:
    """`requires-python` (as "python") and `dependencies` of a script block, each with
    the line of `code` it is written on (the block's first line when not found)."""
    where = f"script metadata, line {line}"
    lines = code.splitlines()

    def written_at(key: str, text: str) -> str:
        for number in range(line, len(lines) + 1):
            source = lines[number - 1]
            if f'"{text}"' in source or f"'{text}'" in source or (key and key in source):
                return f"script metadata, line {number}"
        return where

    found = []
    requires_python = metadata.get("requires-python")
    if isinstance(requires_python, str):
        found.append(
            _dependency(
                f"{PYTHON}{requires_python}",
                DependencySource.DECLARED,
                written_at("requires-python", requires_python),
            )
        )
    listed = metadata.get("dependencies", [])
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        raise DependencyFailure(f"{where}: `dependencies` must be a list of strings")
    found += [_dependency(item, DependencySource.DECLARED, written_at("", item)) for item in listed]
    return found


def distribution(module: str) -> str:
    """The distribution that provides `module` (dotted), by the longest prefix in the table."""
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        if prefix in DISTRIBUTIONS:
            return DISTRIBUTIONS[prefix]
    return parts[0]


def _local_modules(files: Sequence[str]) -> set[str]:
    """Top-level names the job's own files provide (`helpers.py`, `pkg/__init__.py`)."""
    names = set()
    for path in map(PurePosixPath, files):
        if len(path.parts) > 1:
            names.add(path.parts[0])
        elif path.suffix == ".py":
            names.add(path.stem)
    return names


def _overrides(code: str) -> dict[int, str]:
    """`# gristmill: ...` comments by line."""
    found = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.COMMENT and (match := _OVERRIDE.match(token.string)):
                found[token.start[0]] = match["requirements"]
    except (tokenize.TokenError, SyntaxError):
        return {}
    return found


def _imports(tree: ast.AST) -> Iterator[tuple[ast.stmt, list[str]]]:
    """Each absolute import statement with the dotted names it imports, in line order."""
    statements: list[tuple[ast.stmt, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            statements.append((node, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            statements.append((node, [f"{node.module}.{alias.name}" for alias in node.names]))
    yield from sorted(statements, key=lambda item: item[0].lineno)


def inferred(code: str, files: Sequence[str] = ()) -> list[Dependency]:
    """The distributions the imports of `code` need; [] for code that does not parse
    (running it reports the syntax error with the user's line)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    skip = _NOT_PACKAGES | _local_modules(files)
    overrides = _overrides(code)
    found: dict[str, Dependency] = {}
    for node, modules in _imports(tree):
        modules = [m for m in modules if m.split(".")[0] not in skip]
        if not modules:
            continue
        shown = ast.unparse(node)
        lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
        override = next((overrides[n] for n in lines if n in overrides), None)
        if override is not None:
            where = f"{shown}, line {node.lineno}, by its comment"
            for text in override.split(","):
                pinned = _dependency(text.strip(), DependencySource.INFERRED, where)
                found[pinned.name] = pinned
            continue
        where = f"{shown}, line {node.lineno}"
        for module in modules:
            name = canonicalize_name(distribution(module))
            found.setdefault(name, Dependency(name, name, DependencySource.INFERRED, where))
    return list(found.values())


def find(code: str, files: Sequence[str] = ()) -> tuple[Dependency, ...]:
    """What `code` needs, declared or else inferred (see the module's docstring)."""
    metadata = script_metadata(code)
    if metadata is None:
        return tuple(inferred(code, files))
    found = declared(*metadata, code=code)
    if "dependencies" not in metadata[0]:
        found += inferred(code, files)
    return tuple(found)
