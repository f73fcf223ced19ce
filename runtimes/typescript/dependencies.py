"""What a TypeScript job needs from npm: its imports, or a `package.json` among its files.

In order of authority:

1. A `package.json` among the job's files: its `dependencies` (name → version range, each
   a range of a registry package: no URL, path, `git`, `file:`, `link:`, `workspace:` or
   `npm:` alias), DECLARED.
2. Otherwise the imports, read with the tree-sitter grammar (never run): static `import`
   and `export ... from`, `import("x")` and `require("x")` with a literal name. Relative
   and absolute paths, the job's own files, `node:`/`bun:` modules and Node's bare
   built-in names are dropped; `lodash/fp` needs `lodash`, `@scope/pkg/deep` needs
   `@scope/pkg`, and a version in the import (`lodash@4`, `@scope/pkg@^1.2`) is the
   range asked for (else any version: the newest). INFERRED.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

from gristmill.languages import (
    Dependency,
    DependencyFailure,
    DependencySource,
    InvalidRequest,
    syntax,
)

from .signature import LANGUAGE

PACKAGE_JSON = "package.json"

# Node's built-in modules, importable without `node:` (as Bun resolves them too).
NODE_BUILTINS = frozenset(
    [
        "assert",
        "assert/strict",
        "async_hooks",
        "buffer",
        "child_process",
        "cluster",
        "console",
        "constants",
        "crypto",
        "dgram",
        "diagnostics_channel",
        "dns",
        "dns/promises",
        "domain",
        "events",
        "fs",
        "fs/promises",
        "http",
        "http2",
        "https",
        "inspector",
        "inspector/promises",
        "module",
        "net",
        "os",
        "path",
        "path/posix",
        "path/win32",
        "perf_hooks",
        "process",
        "punycode",
        "querystring",
        "readline",
        "readline/promises",
        "repl",
        "stream",
        "stream/consumers",
        "stream/promises",
        "stream/web",
        "string_decoder",
        "sys",
        "timers",
        "timers/promises",
        "tls",
        "trace_events",
        "tty",
        "url",
        "util",
        "util/types",
        "v8",
        "vm",
        "wasi",
        "worker_threads",
        "zlib",
        "test",
        "sqlite",
    ]
)
BUN_MODULES = frozenset({"bun"})
"""Bare names Bun itself provides (`import { serve } from "bun"`)."""

# npm's rules for a package name (lower case, URL-safe, at most 214 characters).
_NAME = re.compile(r"(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*")
# A version range as npm reads one for a registry package: versions, tags, operators.
_RANGE = re.compile(r"[A-Za-z0-9 .*^~<>=|+_-]{1,256}")
# `node:fs`, `bun:ffi`, `https://...`: a module that is not an npm package.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_SPECIFIER = re.compile(
    r"(?P<name>(?:@[^/@\s]+/)?[^/@\s]+)(?:@(?P<range>[^/\s]+))?(?P<path>/.*)?", re.DOTALL
)


def _package(specifier: str) -> tuple[str, str] | None:
    """(name, range) of the npm package a bare import specifier needs; None when the
    specifier needs none (relative, absolute, a built-in, a URL)."""
    if not specifier or specifier.startswith((".", "/")) or _SCHEME.match(specifier):
        return None
    if specifier in NODE_BUILTINS or specifier in BUN_MODULES:
        return None
    match = _SPECIFIER.fullmatch(specifier)
    if match is None:
        return None
    name = match["name"]
    if name in NODE_BUILTINS:
        return None
    return name, match["range"] or ""


def _checked(name: str, version_range: str, where: str) -> Dependency:
    if len(name) > 214 or not _NAME.fullmatch(name):
        raise DependencyFailure(f"{where}: {name!r} is not an npm package name")
    if version_range and not _RANGE.fullmatch(version_range):
        raise DependencyFailure(
            f"{where}: {version_range!r} is not a version range of a registry package "
            "(no URLs, paths, git, file:, link:, workspace: or npm: aliases)"
        )
    requirement = f"{name}@{version_range}" if version_range else name
    return Dependency(name, requirement, DependencySource.INFERRED, where)


def _string_argument(call: syntax.Node) -> str | None:
    arguments = call.child_by_field_name("arguments")
    if arguments is None or len(arguments.named_children) != 1:
        return None
    argument = arguments.named_children[0]
    if argument.type != "string":
        return None
    return syntax.text(argument)[1:-1]


def specifiers(code: str) -> tuple[tuple[str, int], ...]:
    """Each module specifier the code imports, with its line, in document order; none for
    code that does not parse (running it reports the syntax error with its line)."""
    return _specifiers(code)


@functools.lru_cache(maxsize=128)
def _specifiers(code: str) -> tuple[tuple[str, int], ...]:
    try:
        root = syntax.parse(LANGUAGE, code)
    except InvalidRequest:
        return ()
    return tuple(_walk(root))


def _walk(root: syntax.Node) -> Iterator[tuple[str, int]]:
    stack = [root]
    while stack:
        node = stack.pop()
        line = node.start_point[0] + 1
        if node.type in ("import_statement", "export_statement"):
            source = node.child_by_field_name("source")
            if source is not None and source.type == "string":
                yield syntax.text(source)[1:-1], line
        elif node.type == "call_expression":
            function = node.child_by_field_name("function")
            if function is not None and syntax.text(function) in ("import", "require"):
                text = _string_argument(node)
                if text is not None:
                    yield text, line
        stack.extend(reversed(node.named_children))


def versioned_imports(code: str) -> dict[str, str]:
    """Imports that name a version, as `{"lodash@4": "lodash"}`: the wrapper links each to
    the installed package, since Bun looks a specifier up by its whole name."""
    found = {}
    for text, _line in specifiers(code):
        package = _package(text)
        if package is not None and package[1] and _NAME.fullmatch(package[0]):
            found[f"{package[0]}@{package[1]}"] = package[0]
    return found


def _local(files: Sequence[str]) -> set[str]:
    return {PurePosixPath(path).parts[0] for path in files if path}


def inferred(code: str, files: Sequence[str] = ()) -> list[Dependency]:
    local = _local(files)
    found: dict[str, Dependency] = {}
    for text, line in specifiers(code):
        package = _package(text)
        if package is None or package[0] in local:
            continue
        name, version_range = package
        dependency = _checked(name, version_range, f"import {text!r}, line {line}")
        if name not in found or (version_range and found[name].requirement == name):
            found[name] = dependency
    return list(found.values())


def declared(content: str) -> list[Dependency]:
    """The `dependencies` of a package.json."""
    try:
        manifest = json.loads(content)
    except ValueError as error:
        raise DependencyFailure(f"{PACKAGE_JSON}: not JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise DependencyFailure(f"{PACKAGE_JSON}: must be a JSON object")
    listed = manifest.get("dependencies", {})
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        raise DependencyFailure(f"{PACKAGE_JSON}: `dependencies` must map names to versions")
    found = []
    for name, version_range in listed.items():
        dependency = _checked(name, version_range.strip(), f"{PACKAGE_JSON} dependencies")
        found.append(
            Dependency(
                dependency.name, dependency.requirement, DependencySource.DECLARED, dependency.where
            )
        )
    return found


def find(
    code: str, files: Sequence[str] = (), package_json: str | None = None
) -> tuple[Dependency, ...]:
    """What the job needs (see the module's docstring)."""
    if package_json is not None:
        return tuple(declared(package_json))
    return tuple(inferred(code, files))
