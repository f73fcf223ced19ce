"""What a language says about its resolver: the commands that lock and install, as data.

A language's plugin returns a `Resolver`; the core runs its `Step`s in a sandbox with
network (`gristmill.deps.sandboxed.ToolRunner`). Steps are argv lists and file contents, never shell
strings, and they see only the jail paths in `ToolContext`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gristmill.isolation.layout import JAIL_BUILD_DIR, JAIL_TOOL_CACHE_DIR, JAIL_TOOLS_DIR
from gristmill.model import Dependency, Lockfile


@dataclass(frozen=True)
class ToolContext:
    """What a step may refer to; every path is as seen inside the resolve sandbox."""

    # The interpreter or compiler the job runs on, as `Runtime.toolchain_version` says.
    toolchain_version: str
    # Registries to use instead of the resolver's default; empty: its default.
    index_urls: tuple[str, ...] = ()
    # Trust the system's CA store (mounted at /etc/ssl/certs) rather than the tool's own.
    system_certs: bool = True
    # Whether packages may be built from source: their build code would then run in
    # the resolve sandbox, with the download cache writable (the tenant's own, then).
    allow_source_builds: bool = False
    tools_dir: str = JAIL_TOOLS_DIR
    cache_dir: str = JAIL_TOOL_CACHE_DIR
    # The environment being built: the only other place an install step may write.
    build_dir: str = JAIL_BUILD_DIR


@dataclass(frozen=True)
class Step:
    """One run of the resolver in the sandbox, in the job directory `/job`."""

    argv: tuple[str, ...]
    # Written into /job before the run, by relative path.
    files: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    # Whether its stdout is its result (the lockfile); then only stderr is progress.
    # (Not a file: /job may be a copy in the sandbox, and what is written there stays.)
    stdout_is_result: bool = False
    # Run after this step succeeds, in a sandbox of its own **without network and without
    # the shared download cache**, the same environment directory writable: for work that
    # runs package code, e.g. warming a cache kept inside the environment. Its code then
    # reaches only the environment that holds it, never the registry or other tenants.
    then_offline: Step | None = None


class Resolver(Protocol):
    """A language's dependency tool (e.g. uv for Python)."""

    # The tool's name, part of the cache key.
    name: str
    # The format of the lockfiles it writes, e.g. "requirements.txt".
    lock_format: str
    # Host programs, by name, the steps run from `ToolContext.tools_dir`; empty for a
    # resolver whose steps bring their program as a file (`Step.files`) and run it with
    # an interpreter the sandbox has in /usr.
    programs: tuple[str, ...]

    def version_argv(self, program_path: str) -> Sequence[str]:
        """The host command printing the tool's version (part of the cache key);
        `program_path` is the first program's copy (the tools directory if none)."""
        ...

    def lock(self, dependencies: Sequence[Dependency], context: ToolContext) -> Step:
        """The step that prints the lockfile for `dependencies` on its stdout.

        Raises `DependencyFailure` for what can be judged wrong without the registry
        (e.g. the code asks for another interpreter version).
        """
        ...

    def install(self, lockfile: Lockfile, context: ToolContext) -> Step:
        """The step that installs exactly `lockfile` into `context.build_dir`.

        Raises `DependencyFailure` for a lockfile that names anything but pinned packages
        of the configured index (`gristmill.languages.lockfiles`).
        """
        ...


@runtime_checkable
class ChecksLockfiles(Protocol):
    """A resolver with rules for its lockfile format (a format without is refused): the
    request's validation calls them on a caller's lockfile before anything is installed
    from it."""

    def check_lockfile(self, content: str) -> None:
        """Raises `gristmill.languages.lockfiles.LockfileRefused` unless `content` pins only
        exact packages of the configured registry, each with its hash; the refusal names
        the line (`LockfileRefused.at`)."""
        ...
