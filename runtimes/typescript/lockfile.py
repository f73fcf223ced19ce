"""Bun's text lockfile (`bun.lock`), checked: registry packages with integrity only.

A lockfile a caller sends is installed for them, so before anything runs it must say
nothing but "these exact versions of packages of the configured registry, with these
sha512 hashes". Refused: `git`, `github:`, `file:`, `link:`, `workspace:`, tarball URLs
and `npm:` aliases (anything but `name@version` as a package's resolution), a package
from another registry, a package without a sha512 integrity, workspaces other than the
root, trusted dependencies (whose scripts Bun would run), patches, overrides and catalogs.

What gets installed is re-rendered from what was checked (`render`): the lockfile as
plain JSON and the package.json that `--frozen-lockfile` compares it with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gristmill.languages import LockfileRefused, json_line

BUN_LOCK = "bun.lock"
PROJECT_NAME = "gristmill-job"
"""The root package's name in the package.json a lockfile is resolved for."""
MAX_PACKAGES = 10_000

_TRAILING_COMMA = re.compile(r'("(?:[^"\\]|\\.)*")|,(\s*[}\]])')
_NAME = r"(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*"
_PACKAGE_NAME = re.compile(_NAME)
# Hoisting writes a package that could not be hoisted under its parent's path: "a/b".
_PACKAGE_KEY = re.compile(rf"{_NAME}(?:/{_NAME})*")
_VERSION = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_INTEGRITY = re.compile(r"sha512-[A-Za-z0-9+/]{86}==")
_RANGE = re.compile(r"[A-Za-z0-9 .*^~<>=|+_-]{1,256}")
_TOP_KEYS = frozenset({"lockfileVersion", "configVersion", "workspaces", "packages"})
_WORKSPACE_KEYS = frozenset(
    {"name", "version", "dependencies", "devDependencies", "optionalDependencies"}
)
_INFO_KEYS = frozenset(
    {
        "dependencies",
        "optionalDependencies",
        "peerDependencies",
        "optionalPeers",
        "bin",
        "binDir",
        "os",
        "cpu",
        "libc",
        "deprecated",
        # Informational: no script runs, whatever it says (--ignore-scripts).
        "hasInstallScript",
    }
)
_DEPENDENCY_KINDS = ("dependencies", "optionalDependencies", "peerDependencies")


@dataclass(frozen=True)
class Checked:
    """A lockfile that passed the check, and what its root workspace asks for."""

    document: dict[str, Any]
    dependencies: dict[str, str]
    name: str = PROJECT_NAME

    def render(self) -> dict[str, str]:
        """The files an install reads, by name: the lockfile as plain JSON, and the
        package.json whose dependencies it was resolved for."""
        manifest = {"name": self.name, "private": True, "dependencies": self.dependencies}
        return {
            BUN_LOCK: json.dumps(self.document, indent=2) + "\n",
            "package.json": json.dumps(manifest, indent=2) + "\n",
        }


class _Refused(Exception):
    """A refusal at a place in the document: its keys from the top, and why."""

    def __init__(self, where: tuple[str, ...], why: str) -> None:
        super().__init__(why)
        self.where = where
        self.why = why


def loads(content: str) -> Any:
    """bun.lock as Bun writes it: JSON with trailing commas."""
    try:
        return json.loads(_TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), content))
    except json.JSONDecodeError as error:
        line = content.splitlines()[error.lineno - 1] if content.strip() else ""
        raise LockfileRefused.at(
            error.lineno, line, f"is not bun.lock (JSON with trailing commas): {error.msg}"
        ) from error
    except (ValueError, RecursionError) as error:
        raise LockfileRefused(f"not a bun.lock (JSON with trailing commas): {error}") from error


def _table(value: Any, where: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Refused(where, f"{what} must be an object")
    return value


def _ranges(value: Any, where: tuple[str, ...], what: str) -> dict[str, str]:
    table = _table(value, where, what)
    for name, version_range in table.items():
        if not _PACKAGE_NAME.fullmatch(name) or not isinstance(version_range, str):
            raise _Refused((*where, name), f"{what}: {name!r} is not a package name with a version")
        if not _RANGE.fullmatch(version_range):
            raise _Refused(
                (*where, name),
                f"{what}: {version_range!r} is not a version range of a registry package",
            )
    return table


def _package(key: str, entry: Any) -> None:
    where = ("packages", key)
    what = f"packages.{key}"
    if not _PACKAGE_KEY.fullmatch(key):
        raise _Refused(where, f"{what}: not a package path")
    if not isinstance(entry, list) or len(entry) != 4:
        raise _Refused(
            where,
            f"{what}: not a registry package ([name@version, registry, info, integrity]);"
            " git, file, link, tarball and workspace packages are refused",
        )
    resolution, registry, info, integrity = entry
    name, _, version = str(resolution).rpartition("@")
    if not _PACKAGE_NAME.fullmatch(name) or not _VERSION.fullmatch(version):
        raise _Refused(where, f"{what}: {resolution!r} is not name@version of a registry package")
    if key != name and not key.endswith("/" + name):
        raise _Refused(where, f"{what}: holds {name!r} under another name (an alias)")
    if registry != "":
        raise _Refused(where, f"{what}: from {registry!r}, not the configured registry")
    if not isinstance(integrity, str) or not _INTEGRITY.fullmatch(integrity):
        raise _Refused(where, f"{what}: no sha512 integrity")
    info = _table(info, where, f"{what} info")
    unknown = set(info) - _INFO_KEYS
    if unknown:
        raise _Refused((*where, min(unknown)), f"{what} info: unknown keys {sorted(unknown)}")
    for kind in _DEPENDENCY_KINDS:
        if kind in info:
            _ranges(info[kind], (*where, kind), f"{what} {kind}")


def _check(document: Any) -> Checked:
    document = _table(document, (), "the lockfile")
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise _Refused((min(unknown),), f"unknown or refused keys {sorted(unknown)}")
    if not isinstance(document.get("lockfileVersion"), int):
        raise _Refused(("lockfileVersion",), "no lockfileVersion")
    workspaces = _table(document.get("workspaces"), ("workspaces",), "workspaces")
    if set(workspaces) != {""}:
        other = min(set(workspaces) - {""}, default="")
        raise _Refused(("workspaces", other), "only the root workspace is allowed")
    root_at = ("workspaces", "")
    root = _table(workspaces[""], root_at, "the root workspace")
    refused = set(root) - _WORKSPACE_KEYS
    if refused:
        raise _Refused(
            (*root_at, min(refused)), f"the root workspace: refused keys {sorted(refused)}"
        )
    dependencies = _ranges(
        root.get("dependencies", {}),
        (*root_at, "dependencies"),
        "the root workspace's dependencies",
    )
    packages = _table(document.get("packages", {}), ("packages",), "packages")
    if not packages:
        raise _Refused(("packages",), "the lockfile pins no package")
    if len(packages) > MAX_PACKAGES:
        raise _Refused(("packages",), f"more than {MAX_PACKAGES} packages")
    for key, entry in packages.items():
        _package(key, entry)
    missing = [name for name in dependencies if name not in packages]
    if missing:
        raise _Refused(
            (*root_at, "dependencies", missing[0]),
            f"the root depends on {missing[0]!r}, which the lockfile lacks",
        )
    name = root.get("name", PROJECT_NAME)
    if not isinstance(name, str) or not _PACKAGE_NAME.fullmatch(name):
        raise _Refused((*root_at, "name"), "the root workspace's name is not a package name")
    return Checked(document, dict(dependencies), name)


def check(content: str) -> Checked:
    """The checked lockfile; raises `LockfileRefused` naming the line of what is not
    allowed."""
    try:
        return _check(loads(content))
    except _Refused as refused:
        number, text = json_line(content, refused.where)
        raise LockfileRefused.at(number, text, f"is refused: {refused.why}") from None
