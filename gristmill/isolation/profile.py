"""Typed sandbox profiles, read from `sandbox/profiles/*.toml`.

One description of what a job may see and do: the base profile plus a language's
delta. Backends render it (the process backend applies it in the child, nsjail
receives it as argv); nothing is ever built from string templates, and nothing
from a request can become a directive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import is_dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from gristmill import typed_toml
from gristmill.errors import GristmillError


class ProfileError(GristmillError):
    """A profile file is malformed."""


_TABLE = ConfigDict(extra="forbid", validate_by_name=True)
"""A profile's tables refuse keys they do not declare; `mounts` is written `[[mount]]`."""


@dataclass(frozen=True, config=_TABLE)
class BindMount:
    source: StrictStr
    target: StrictStr
    writable: StrictBool = False
    # A missing optional source is skipped; a missing required one fails the job.
    optional: StrictBool = False


@dataclass(frozen=True, config=_TABLE)
class Symlink:
    path: StrictStr
    target: StrictStr


@dataclass(frozen=True, config=_TABLE)
class Rlimits:
    nofile: StrictInt = 1024
    stack: StrictInt = 8 * 1024 * 1024
    core: StrictInt = 0
    memlock: StrictInt = 64 * 1024
    # Per-user kernel quotas, charged to the host uid that made the job's user
    # namespace: a job's own rlimit bounds how much of them it can take.
    sigpending: StrictInt = 256
    msgqueue: StrictInt = 256 * 1024


@dataclass(frozen=True, config=_TABLE)
class SeccompPolicy:
    deny: tuple[StrictStr, ...] = ()
    # Calls answered ENOSYS, as if this kernel lacked them (programs then fall back).
    nosys: tuple[StrictStr, ...] = ()


_MiB = 1024 * 1024


@dataclass(frozen=True, config=_TABLE)
class SandboxProfile:
    uid: StrictInt = 65534
    gid: StrictInt = 65534
    hostname: StrictStr = "gristmill"
    tmpfs_bytes: StrictInt = 64 * _MiB
    # Size of the tmpfs the job directory is copied into: the job cannot fill the host disk.
    job_dir_bytes: StrictInt = 64 * _MiB
    file_size_bytes: StrictInt = 64 * _MiB
    # Size of the job's private /dev/shm (POSIX shared memory and semaphores).
    shm_bytes: StrictInt = 64 * _MiB
    overhead_processes: StrictInt = 2
    mounts: tuple[BindMount, ...] = Field(default=(), validation_alias="mount")
    symlinks: tuple[Symlink, ...] = Field(default=(), validation_alias="symlink")
    devices: tuple[StrictStr, ...] = ()
    # /proc entries hidden from the job (a file under /dev/null, a directory under an
    # empty read-only tmpfs); entries this kernel lacks are skipped.
    masked_paths: tuple[StrictStr, ...] = ()
    env: Mapping[StrictStr, StrictStr] = Field(default_factory=dict)
    rlimits: Rlimits = Rlimits()
    seccomp: SeccompPolicy = SeccompPolicy()

    def with_mounts(self, *mounts: BindMount) -> SandboxProfile:
        """This profile with further mounts, e.g. a job's runtime or environment."""
        return replace(self, mounts=self.mounts + mounts)


def _merged(base: Any, delta: Any, given: Mapping[str, Any]) -> Any:
    """`base` with the keys a file gives (`given`, read as `delta`): lists are appended
    to, tables merged key by key, other values replaced."""
    fields = type(base).__pydantic_fields__.items()
    names = {info.validation_alias: name for name, info in fields if info.validation_alias}
    changes: dict[str, Any] = {}
    for key, value in given.items():
        name = names.get(key) or key
        old, new = getattr(base, name), getattr(delta, name)
        if isinstance(old, tuple):
            changes[name] = old + new
        elif isinstance(old, Mapping):
            changes[name] = {**old, **new}
        elif is_dataclass(old):
            changes[name] = _merged(old, new, value)
        else:
            changes[name] = new
    return replace(base, **changes)


def _apply(base: SandboxProfile, path: Path) -> SandboxProfile:
    data, text = typed_toml.read(path, ProfileError)
    delta = typed_toml.validate(SandboxProfile, data, path, text, ProfileError)
    merged: SandboxProfile = _merged(base, delta, data)
    return merged


def load_profile(profiles_dir: Path, language: str) -> SandboxProfile:
    """The base profile with `language`'s delta applied (a language may have none)."""
    profile = _apply(SandboxProfile(), profiles_dir / "base.toml")
    delta = profiles_dir / f"{language}.toml"
    return _apply(profile, delta) if delta.exists() else profile
