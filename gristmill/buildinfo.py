"""Which build of gristmill is running, for `ListRuntimes` and bug reports.

An image stamps its build in `GRISTMILL_BUILD` when it is made; a server run from a
git checkout asks git (once) for the commit, marked `-dirty` when files differ.
"""

from __future__ import annotations

import functools
import os
import subprocess

from gristmill.languages.registry import REPO_ROOT

__all__ = ["build"]

UNKNOWN = "unknown"


@functools.cache
def build() -> str:
    stamped = os.environ.get("GRISTMILL_BUILD", "")
    if stamped:
        return stamped
    if not (REPO_ROOT / ".git").exists():
        return UNKNOWN
    try:
        described = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return described.stdout.strip() or UNKNOWN
