"""The cache key of an environment: everything that decides what gets installed.

A typed, frozen value hashed canonically (sorted JSON of its fields), so that adding
a field or changing the layout means bumping `SCHEMA_VERSION`, never inventing a
string prefix. `canonical_digest` is that hash, for every cache key of the service
(the build's too, `gristmill.jobs.build.BuildKey`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SCHEMA_VERSION = 1
"""Bumped when the on-disk layout of an environment changes."""


def host_platform() -> str:
    """The machine and C library that compiled wheels depend on, e.g. "linux-x86_64-glibc2.36"."""
    libc, version = platform.libc_ver()
    return f"{sys.platform}-{platform.machine()}-{libc}{version}"


def canonical_digest(key: DataclassInstance) -> str:
    """Hex SHA-256 of the canonical JSON (sorted keys, no spaces) of a dataclass's fields."""
    canonical = json.dumps(dataclasses.asdict(key), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class EnvironmentKey:
    language: str
    # The interpreter or compiler the environment is for, e.g. "Python 3.11.2".
    toolchain_version: str
    resolver: str
    resolver_version: str
    lockfile_sha256: str
    # Where packages come from; the same lockfile from another registry may differ.
    index_urls: tuple[str, ...]
    # Whose environments these are: "" for every tenant's, else one tenant's own
    # (`DependencyManager._partition`: packages built from source).
    partition: str = ""
    platform: str = dataclasses.field(default_factory=host_platform)
    schema_version: int = SCHEMA_VERSION

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON of every field."""
        return canonical_digest(self)
