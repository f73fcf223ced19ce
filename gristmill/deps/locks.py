"""File locks (`flock`) shared by the service's caches, across server processes.

A waiter polls rather than blocks in `flock()`: a thread blocked there cannot be
cancelled, and a job whose caller went away must stop waiting.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_POLL_S", "flock", "open_lock", "try_flock"]

LOCK_POLL_S = 0.02
"""How often a waiting job tries a file lock again (polling keeps waiting cancellable)."""


def open_lock(path: Path) -> int:
    """A descriptor of the lock file `path`, created if missing, readable by the service only."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def try_flock(fd: int, operation: int) -> bool:
    """Takes `operation` (LOCK_SH or LOCK_EX) on `fd` if no one stops it; False if someone does."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def flock(fd: int, operation: int) -> None:
    """Takes a file lock without blocking the loop; cancelling the wait leaves it untaken."""
    # A file lock has no event to await, and a thread blocked in flock() cannot be
    # cancelled: polling is what keeps a waiting job cancellable.
    while not try_flock(fd, operation):  # noqa: ASYNC110
        await asyncio.sleep(LOCK_POLL_S)
