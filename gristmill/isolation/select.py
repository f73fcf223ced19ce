"""Chooses the sandbox backend a server runs every job in."""

from __future__ import annotations

from pathlib import Path

from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import SandboxBackend
from gristmill.isolation.cgroups import CgroupsUnavailable, detect
from gristmill.isolation.process_backend import ProcessBackend

BACKENDS = ("process",)


def open_backend(name: str | None, work_dir: Path) -> SandboxBackend:
    """The backend called `name`, or the best one that works here when `name` is None."""
    if name not in (None, *BACKENDS):
        raise SandboxFailure(f"unknown sandbox backend {name!r}; known: {', '.join(BACKENDS)}")
    try:
        return ProcessBackend(detect())
    except CgroupsUnavailable as problem:
        return ProcessBackend(None, str(problem))
