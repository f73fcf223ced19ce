"""Go modules of a job: inferred from its imports, pinned by `//gristmill:require` lines,
and its lockfile (go.mod + go.sum in one text) checked before anything installs it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gristmill.deps.errors import DependencyFailure
from gristmill.languages import syntax
from gristmill.model import Dependency, DependencySource

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


class LockfileRefused(Exception):
    pass


_MOD_LINE = re.compile(rf"(?P<path>{_PATH}) (?P<version>{_VERSION})(?P<indirect> // indirect)?")
_SUM_LINE = re.compile(rf"{_PATH} {_VERSION}(?:/go\.mod)? h1:[A-Za-z0-9+/]{{43}}=")


def parse_lock(text: str) -> Lock:
    """The lockfile's pins; `LockfileRefused` for anything but plain requirements of
    proxy modules with their hashes (no replace, exclude, retract, tool or godebug)."""
    parts = re.split(r"^-- (go\.mod|go\.sum) --\n", text, flags=re.M)
    if len(parts) != 5 or parts[0].strip() or parts[1] != "go.mod" or parts[3] != "go.sum":
        raise LockfileRefused("expected the sections '-- go.mod --' then '-- go.sum --'")
    requires: list[tuple[str, str, bool]] = []
    in_block = False
    for number, raw in enumerate(parts[2].splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        if in_block:
            if line == ")":
                in_block = False
                continue
            statement = line
        elif line == "require (":
            in_block = True
            continue
        elif line.startswith("require "):
            statement = line.removeprefix("require ").strip()
        elif line.startswith("module "):
            if line != f"module {MODULE}":
                raise LockfileRefused(f"go.mod line {number}: the module must be {MODULE}")
            continue
        elif re.fullmatch(r"(go|toolchain) [0-9A-Za-z.]+", line):
            continue
        else:
            raise LockfileRefused(f"go.mod line {number}: {line.split()[0]!r} is not allowed")
        match = _MOD_LINE.fullmatch(statement)
        if match is None:
            raise LockfileRefused(f"go.mod line {number}: not a pinned requirement")
        requires.append((match["path"], match["version"], bool(match["indirect"])))
    sums = tuple(line.strip() for line in parts[4].splitlines() if line.strip())
    for line in sums:
        if not _SUM_LINE.fullmatch(line):
            raise LockfileRefused(f"go.sum: {line[:80]!r} is not a module hash")
    summed = {tuple(line.split()[:2]) for line in sums}
    for path, version, _ in requires:
        if (path, version) not in summed:
            raise LockfileRefused(f"go.sum has no hash of {path} {version}")
    return Lock(tuple(requires), sums)
