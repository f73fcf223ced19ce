"""Typed sandbox profiles, read from `sandbox/profiles/*.toml`.

One description of what a job may see and do: the base profile plus a language's
delta. Backends render it (the process backend applies it in the child, nsjail
receives it as argv); nothing is ever built from string templates, and nothing
from a request can become a directive.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gristmill.errors import GristmillError


class ProfileError(GristmillError):
    """A profile file is malformed."""


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    writable: bool = False
    # A missing optional source is skipped; a missing required one fails the job.
    optional: bool = False


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str


@dataclass(frozen=True)
class Rlimits:
    nofile: int = 1024
    stack: int = 8 * 1024 * 1024
    core: int = 0
    memlock: int = 64 * 1024
    # Per-user kernel quotas, charged to the host uid that made the job's user
    # namespace: a job's own rlimit bounds how much of them it can take.
    sigpending: int = 256
    msgqueue: int = 256 * 1024


@dataclass(frozen=True)
class SeccompPolicy:
    deny: tuple[str, ...] = ()
    # Calls answered ENOSYS, as if this kernel lacked them (programs then fall back).
    nosys: tuple[str, ...] = ()


@dataclass(frozen=True)
class SandboxProfile:
    uid: int = 65534
    gid: int = 65534
    hostname: str = "gristmill"
    tmpfs_bytes: int = 64 * 1024 * 1024
    # Size of the tmpfs the job directory is copied into: the job cannot fill the host disk.
    job_dir_bytes: int = 64 * 1024 * 1024
    file_size_bytes: int = 64 * 1024 * 1024
    # Size of the job's private /dev/shm (POSIX shared memory and semaphores).
    shm_bytes: int = 64 * 1024 * 1024
    overhead_processes: int = 2
    mounts: tuple[BindMount, ...] = ()
    symlinks: tuple[Symlink, ...] = ()
    devices: tuple[str, ...] = ()
    # /proc entries hidden from the job (a file under /dev/null, a directory under an
    # empty read-only tmpfs); entries this kernel lacks are skipped.
    masked_paths: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    rlimits: Rlimits = Rlimits()
    seccomp: SeccompPolicy = SeccompPolicy()

    def with_mounts(self, *mounts: BindMount) -> SandboxProfile:
        """This profile with further mounts, e.g. a job's runtime or environment."""
        return replace(self, mounts=self.mounts + mounts)


_SCALARS = (
    "uid",
    "gid",
    "hostname",
    "tmpfs_bytes",
    "job_dir_bytes",
    "file_size_bytes",
    "shm_bytes",
    "overhead_processes",
)


def _merge(base: SandboxProfile, data: Mapping[str, Any], origin: Path) -> SandboxProfile:
    unknown = set(data) - {
        *_SCALARS,
        "mount",
        "symlink",
        "devices",
        "masked_paths",
        "env",
        "rlimits",
        "seccomp",
    }
    if unknown:
        raise ProfileError(f"{origin}: unknown keys {sorted(unknown)}")
    try:
        scalars = {key: data[key] for key in _SCALARS if key in data}
        mounts = tuple(BindMount(**m) for m in data.get("mount", ()))
        symlinks = tuple(Symlink(**s) for s in data.get("symlink", ()))
        rlimits = replace(base.rlimits, **data.get("rlimits", {}))
        deny = tuple(data.get("seccomp", {}).get("deny", ()))
        nosys = tuple(data.get("seccomp", {}).get("nosys", ()))
    except TypeError as error:
        raise ProfileError(f"{origin}: {error}") from error
    return replace(
        base,
        **scalars,
        mounts=base.mounts + mounts,
        symlinks=base.symlinks + symlinks,
        devices=base.devices + tuple(data.get("devices", ())),
        masked_paths=base.masked_paths + tuple(data.get("masked_paths", ())),
        env={**base.env, **data.get("env", {})},
        rlimits=rlimits,
        seccomp=SeccompPolicy(deny=base.seccomp.deny + deny, nosys=base.seccomp.nosys + nosys),
    )


def load_profile(profiles_dir: Path, language: str) -> SandboxProfile:
    """The base profile with `language`'s delta applied (a language may have none)."""
    base_file = profiles_dir / "base.toml"
    profile = _merge(SandboxProfile(), tomllib.loads(base_file.read_text()), base_file)
    delta = profiles_dir / f"{language}.toml"
    if delta.exists():
        profile = _merge(profile, tomllib.loads(delta.read_text()), delta)
    return profile
