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

from gristmill.deps.lockfiles import LockfileRefused

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


def loads(content: str) -> Any:
    """bun.lock as Bun writes it: JSON with trailing commas."""
    if "\0" in content:
        raise LockfileRefused("the lockfile contains a NUL byte")
    try:
        return json.loads(_TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), content))
    except (ValueError, RecursionError) as error:
        raise LockfileRefused(f"not a bun.lock (JSON with trailing commas): {error}") from error


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LockfileRefused(f"{where} must be an object")
    return value


def _ranges(value: Any, where: str) -> dict[str, str]:
    table = _table(value, where)
    for name, version_range in table.items():
        if not _PACKAGE_NAME.fullmatch(name) or not isinstance(version_range, str):
            raise LockfileRefused(f"{where}: {name!r} is not a package name with a version")
        if not _RANGE.fullmatch(version_range):
            raise LockfileRefused(
                f"{where}.{name}: {version_range!r} is not a version range of a registry package"
            )
    return table


def _package(key: str, entry: Any) -> None:
    where = f"packages.{key}"
    if not _PACKAGE_KEY.fullmatch(key):
        raise LockfileRefused(f"{where}: not a package path")
    if not isinstance(entry, list) or len(entry) != 4:
        raise LockfileRefused(
            f"{where}: not a registry package ([name@version, registry, info, integrity]);"
            " git, file, link, tarball and workspace packages are refused"
        )
    resolution, registry, info, integrity = entry
    name, _, version = str(resolution).rpartition("@")
    if not _PACKAGE_NAME.fullmatch(name) or not _VERSION.fullmatch(version):
        raise LockfileRefused(f"{where}: {resolution!r} is not name@version of a registry package")
    if key != name and not key.endswith("/" + name):
        raise LockfileRefused(f"{where}: holds {name!r} under another name (an alias)")
    if registry != "":
        raise LockfileRefused(f"{where}: from {registry!r}, not the configured registry")
    if not isinstance(integrity, str) or not _INTEGRITY.fullmatch(integrity):
        raise LockfileRefused(f"{where}: no sha512 integrity")
    info = _table(info, f"{where} info")
    unknown = set(info) - _INFO_KEYS
    if unknown:
        raise LockfileRefused(f"{where} info: unknown keys {sorted(unknown)}")
    for kind in _DEPENDENCY_KINDS:
        if kind in info:
            _ranges(info[kind], f"{where} {kind}")


def check(content: str) -> Checked:
    """The checked lockfile; raises `LockfileRefused` saying what is not allowed."""
    document = _table(loads(content), "the lockfile")
    unknown = set(document) - _TOP_KEYS
    if unknown:
        raise LockfileRefused(f"unknown or refused keys {sorted(unknown)}")
    if not isinstance(document.get("lockfileVersion"), int):
        raise LockfileRefused("no lockfileVersion")
    workspaces = _table(document.get("workspaces"), "workspaces")
    if set(workspaces) != {""}:
        raise LockfileRefused("only the root workspace is allowed")
    root = _table(workspaces[""], "the root workspace")
    if set(root) - _WORKSPACE_KEYS:
        raise LockfileRefused(
            f"the root workspace: refused keys {sorted(set(root) - _WORKSPACE_KEYS)}"
        )
    dependencies = _ranges(root.get("dependencies", {}), "the root workspace's dependencies")
    packages = _table(document.get("packages", {}), "packages")
    if not packages:
        raise LockfileRefused("the lockfile pins no package")
    if len(packages) > MAX_PACKAGES:
        raise LockfileRefused(f"more than {MAX_PACKAGES} packages")
    for key, entry in packages.items():
        _package(key, entry)
    missing = [name for name in dependencies if name not in packages]
    if missing:
        raise LockfileRefused(f"the root depends on {missing[0]!r}, which the lockfile lacks")
    name = root.get("name", PROJECT_NAME)
    if not isinstance(name, str) or not _PACKAGE_NAME.fullmatch(name):
        raise LockfileRefused("the root workspace's name is not a package name")
    return Checked(document, dict(dependencies), name)
