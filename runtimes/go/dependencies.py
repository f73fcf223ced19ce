"""Go modules of a job: inferred from its imports, pinned by `//gristmill:require` lines,
and its lockfile (go.mod + go.sum in one text) checked before anything installs it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gristmill.languages import (
    Dependency,
    DependencyFailure,
    DependencySource,
    LockfileRefused,
    syntax,
)

MODULE = "gristmill.job"
"""The module path of every job: its package is `gristmill.job`, wrapper.go imports it."""
GO_LINE = "go 1.26"
_PATH = r"[A-Za-z0-9][A-Za-z0-9._~/-]*"
_VERSION = r"v[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?(?:\+incompatible)?"
_REQUIRE = re.compile(rf"//\s*gristmill:require\s+(?P<path>{_PATH})\s+(?P<version>{_VERSION})\s*$")
_IMPORT = re.compile(_PATH)


def is_standard(path: str) -> bool:
    """The standard library's import paths have no dot in their first element."""
    return "." not in path.split("/", 1)[0]


def dependencies(root: syntax.Node, has_go_mod: bool = False) -> tuple[Dependency, ...]:
    """The modules the code needs: `//gristmill:require path vX.Y.Z` pins first, then
    every import outside the standard library (its module is found by `go mod tidy`)."""
    found: dict[str, Dependency] = {}
    stack = [root]
    comments: list[syntax.Node] = []
    imports: list[syntax.Node] = []
    while stack:
        node = stack.pop()
        if node.type == "comment":
            comments.append(node)
        elif node.type == "import_spec":
            imports.append(node)
        elif node.type in ("source_file", "import_declaration", "import_spec_list"):
            stack.extend(node.named_children)
    for comment in sorted(comments, key=lambda n: n.start_byte):
        text = syntax.text(comment)
        if "gristmill:require" not in text:
            continue
        match = _REQUIRE.fullmatch(text.strip())
        line = comment.start_point[0] + 1
        if match is None:
            raise DependencyFailure(f"line {line}: expected //gristmill:require MODULE vX.Y.Z")
        path = match["path"]
        found[path] = Dependency(
            path, f"{path} {match['version']}", DependencySource.DECLARED, f"line {line}"
        )
    for spec in sorted(imports, key=lambda n: n.start_byte):
        path = syntax.field_text(spec, "path").strip('"`')
        if is_standard(path) or path == MODULE or path.startswith(MODULE + "/"):
            continue
        if not _IMPORT.fullmatch(path):
            raise DependencyFailure(f"import {path!r}: not a module path")
        if not any(path == p or path.startswith(p + "/") for p in found):
            where = f"import {path}, line {spec.start_point[0] + 1}"
            found.setdefault(path, Dependency(path, path, DependencySource.INFERRED, where))
    del has_go_mod
    return tuple(found.values())


@dataclass(frozen=True)
class Lock:
    """A checked go.mod + go.sum, rendered anew from what was checked."""

    requires: tuple[tuple[str, str, bool], ...]  # path, version, indirect
    sums: tuple[str, ...]

    def go_mod(self) -> str:
        lines = [f"module {MODULE}", "", GO_LINE, ""]
        if self.requires:
            lines.append("require (")
            for path, version, indirect in self.requires:
                lines.append(f"\t{path} {version}{' // indirect' if indirect else ''}")
            lines.append(")")
        return "\n".join(lines) + "\n"

    def go_sum(self) -> str:
        return "".join(f"{line}\n" for line in self.sums)

    def render(self) -> str:
        return f"-- go.mod --\n{self.go_mod()}-- go.sum --\n{self.go_sum()}"


_MOD_LINE = re.compile(rf"(?P<path>{_PATH}) (?P<version>{_VERSION})(?P<indirect> // indirect)?")
_SUM_LINE = re.compile(
    rf"(?P<path>{_PATH}) (?P<version>{_VERSION})(?P<mod>/go\.mod)? h1:[A-Za-z0-9+/]{{43}}="
)
# The language versions the jobs' toolchain (GO_LINE's) runs without fetching another.
_GO_DIRECTIVE = re.compile(r"go 1\.(?P<minor>[0-9]+)(?:\.[0-9]+)?")
_TOOLCHAIN_DIRECTIVE = re.compile(r"toolchain go1\.(?P<minor>[0-9]+)(?:\.[0-9]+)?")
_GO_MINOR = int(GO_LINE.rsplit(".", 1)[1])
_SECTIONS = ("-- go.mod --", "-- go.sum --")


def _sections(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The go.mod and go.sum lines, each with its number in the whole lockfile."""
    found: dict[str, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line in _SECTIONS and line not in found and len(found) == _SECTIONS.index(line):
            current = found[line] = []
        elif current is not None:
            current.append((number, line))
        elif line:
            raise LockfileRefused.at(number, line, "comes before the section '-- go.mod --'")
    if len(found) != len(_SECTIONS):
        raise LockfileRefused("expected the sections '-- go.mod --' then '-- go.sum --'")
    return found[_SECTIONS[0]], found[_SECTIONS[1]]


def _directive(number: int, line: str) -> None:
    """A `go` or `toolchain` line: only versions the local toolchain is (never one Go
    would fetch: GOTOOLCHAIN is local, and the install writes GO_LINE whatever this says)."""
    match = _GO_DIRECTIVE.fullmatch(line) or _TOOLCHAIN_DIRECTIVE.fullmatch(line)
    if match is None:
        raise LockfileRefused.at(number, line, "is not a Go version")
    if int(match["minor"]) > _GO_MINOR:
        raise LockfileRefused.at(number, line, f"needs a newer Go than the jobs' ({GO_LINE})")


def _requires(lines: list[tuple[int, str]]) -> dict[tuple[str, str], tuple[int, str, bool]]:
    """go.mod's requirements by (path, version), each with its line; `LockfileRefused`
    for any other statement (replace, exclude, retract, tool, godebug, ...)."""
    requires: dict[tuple[str, str], tuple[int, str, bool]] = {}
    paths: set[str] = set()
    in_block = False
    for number, line in lines:
        if not line or line.startswith("//"):
            continue
        if in_block and line == ")":
            in_block = False
            continue
        if in_block:
            statement = line
        elif line == "require (":
            in_block = True
            continue
        elif line.startswith("require "):
            statement = line.removeprefix("require ").strip()
        elif line.startswith("module "):
            if line != f"module {MODULE}":
                raise LockfileRefused.at(number, line, f"is refused: the module must be {MODULE}")
            continue
        elif line.split()[0] in ("go", "toolchain"):
            _directive(number, line)
            continue
        else:
            raise LockfileRefused.at(
                number,
                line,
                f"is refused: {line.split()[0]!r} is not allowed (go.mod may only require"
                " modules of the proxy)",
            )
        match = _MOD_LINE.fullmatch(statement)
        if match is None:
            raise LockfileRefused.at(number, line, "is not a pinned requirement")
        if match["path"] in paths:
            raise LockfileRefused.at(number, line, "requires a module go.mod requires already")
        paths.add(match["path"])
        requires[(match["path"], match["version"])] = (number, line, bool(match["indirect"]))
    if in_block:
        raise LockfileRefused("go.mod: a `require (` block is not closed")
    return requires


def parse_lock(text: str) -> Lock:
    """The lockfile's pins; `LockfileRefused`, naming the line, for anything but plain
    requirements of proxy modules with their hashes: no replace, exclude, retract, tool
    or godebug; no Go newer than the jobs'; go.sum holds a hash of each required
    module's archive and no module's hash twice. (It may hold hashes of other modules:
    `go mod tidy` keeps those of the module graph, e.g. a dependency's test dependency,
    which go.mod does not list; a hash never makes Go fetch a module.)"""
    mod_lines, sum_lines = _sections(text)
    requires = _requires(mod_lines)
    sums: list[str] = []
    summed: set[tuple[str, str, bool]] = set()
    for number, line in sum_lines:
        if not line:
            continue
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            raise LockfileRefused.at(number, line, "is not a module hash")
        entry = (match["path"], match["version"], bool(match["mod"]))
        if entry in summed:
            raise LockfileRefused.at(number, line, "is a second hash of one module")
        summed.add(entry)
        sums.append(line)
    for (path, version), (number, line, _) in requires.items():
        if (path, version, False) not in summed:
            raise LockfileRefused.at(number, line, f"has no hash in go.sum of {path} {version}")
    pins = tuple(
        (path, version, indirect) for (path, version), (_, _, indirect) in requires.items()
    )
    return Lock(pins, tuple(sums))
