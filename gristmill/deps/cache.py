"""The environment cache: each environment built once, renamed into place, shared read-only.

An "environment" here is any directory built from a key: installed dependencies
(`deps.manager`), or a job's compiled output (`jobs.build`, under a root of its own).
The cache knows only digests and a builder; what goes in is the caller's business.

Layout under the cache root:

    envs/<digest>/         finished environments, sealed (owned by the service, no one
                           else may write), their mtime the last time a job used them
    tmp/<digest>.<random>  environments being built, or being deleted
    locks/<digest>.build   held exclusively while <digest> is built or deleted
    locks/<digest>.use     held shared by every job using <digest>; eviction needs it
                           exclusively, so an environment in use is never removed

The locks are `flock`s on files, so that several server processes sharing one cache
directory build an environment once and never delete one another's; within a process
an asyncio lock per key keeps concurrent jobs from polling the same file lock. A build
happens in `tmp/` and becomes visible only by `rename`, which is atomic: a job sees a
whole environment or none, and a failed build leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Builder", "EnvironmentCache", "Lease"]

log = logging.getLogger(__name__)

Builder = Callable[[Path], Awaitable[None]]
"""Fills the empty directory it is given with the environment, or raises."""

LOCK_POLL_S = 0.02
"""How often a waiting job tries a file lock again (polling keeps waiting cancellable)."""


@dataclass(frozen=True)
class Lease:
    """An environment a job may use until the lease ends."""

    path: Path
    # False when this call built it.
    cached: bool


class EnvironmentCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._envs = root / "envs"
        self._tmp = root / "tmp"
        self._locks = root / "locks"
        for directory in (root, self._envs, self._tmp, self._locks):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        self._building: dict[str, asyncio.Lock] = {}
        self._remove_stale()

    def path(self, digest: str) -> Path:
        return self._envs / digest

    def _exists(self, digest: str) -> bool:
        """Whether `digest` is built: one stat of a local directory, fine on the loop."""
        return self.path(digest).is_dir()

    @contextlib.asynccontextmanager
    async def use(self, digest: str, build: Builder) -> AsyncIterator[Lease]:
        """The environment `digest`, built by `build` first if no one has built it yet.

        Concurrent callers for one digest, in this process or another, wait for a
        single build. Raises what `build` raised; nothing of the failed build remains.
        """
        use_fd = _open_lock(self._locks / f"{digest}.use")
        try:
            await _flock(use_fd, fcntl.LOCK_SH)
            cached = True
            if not self._exists(digest):
                cached = await self._build_once(digest, build)
            _touch(self.path(digest))
            try:
                yield Lease(self.path(digest), cached)
            finally:
                _touch(self.path(digest))
        finally:
            os.close(use_fd)

    async def _build_once(self, digest: str, build: Builder) -> bool:
        """Builds `digest` unless someone finished it while we waited; True if they did."""
        lock = self._building.setdefault(digest, asyncio.Lock())
        async with lock:
            build_fd = _open_lock(self._locks / f"{digest}.build")
            try:
                await _flock(build_fd, fcntl.LOCK_EX)
                if self._exists(digest):
                    return True
                staging = await asyncio.to_thread(self._staging, digest)
                try:
                    await build(staging)
                    await asyncio.to_thread(self._publish, staging, digest)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
            finally:
                os.close(build_fd)
        await asyncio.to_thread(self.evict)
        return False

    def _staging(self, digest: str) -> Path:
        staging = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=self._tmp))
        staging.chmod(0o755)
        return staging

    def _publish(self, staging: Path, digest: str) -> None:
        """Seals a finished build and renames it into place: it appears whole or not at all."""
        _seal(staging)
        staging.rename(self.path(digest))

    def evict(self) -> list[str]:
        """Removes least recently used environments until the cache fits `max_bytes`.

        An environment a job holds a lease on (in any process) is never removed.
        Returns the digests removed.
        """
        entries = []
        for path in self._envs.iterdir():
            with contextlib.suppress(FileNotFoundError):
                entries.append((path.stat().st_mtime, path.name, _size(path)))
        total = sum(size for _, _, size in entries)
        removed = []
        for _, digest, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if self._remove(digest):
                total -= size
                removed.append(digest)
        return removed

    def _remove(self, digest: str) -> bool:
        """Removes `digest` if no one uses or builds it; False if someone does."""
        use_fd = _open_lock(self._locks / f"{digest}.use")
        build_fd = _open_lock(self._locks / f"{digest}.build")
        try:
            if not (_try_flock(use_fd, fcntl.LOCK_EX) and _try_flock(build_fd, fcntl.LOCK_EX)):
                return False
            doomed = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=self._tmp))
            try:
                self.path(digest).rename(doomed / "env")
            except FileNotFoundError:
                return False
            finally:
                shutil.rmtree(doomed, ignore_errors=True)
            if not self._building.get(digest, asyncio.Lock()).locked():
                self._building.pop(digest, None)
            log.info("evicted environment %s", digest)
            return True
        finally:
            os.close(build_fd)
            os.close(use_fd)

    def _remove_stale(self) -> None:
        """Removes what builds and evictions of dead processes left in `tmp/`."""
        for leftover in self._tmp.iterdir():
            digest = leftover.name.partition(".")[0]
            build_fd = _open_lock(self._locks / f"{digest}.build")
            try:
                if _try_flock(build_fd, fcntl.LOCK_EX):
                    shutil.rmtree(leftover, ignore_errors=True)
            finally:
                os.close(build_fd)


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _flock(fd: int, operation: int) -> None:
    """Takes a file lock without blocking the loop; cancelling the wait leaves it untaken."""
    # A file lock has no event to await, and a thread blocked in flock() cannot be
    # cancelled: polling is what keeps a waiting job cancellable.
    while not _try_flock(fd, operation):  # noqa: ASYNC110
        await asyncio.sleep(LOCK_POLL_S)


def _touch(path: Path) -> None:
    """Marks the environment used now: eviction removes the least recently used first."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


def _size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(directory) / name).lstat().st_size
    return total


def _seal(root: Path) -> None:
    """Makes a finished environment the service's own and read-only to everyone else.

    It was built by the sandbox's unprivileged user, which is also the user jobs run
    as: sealed, no job can change it even where it is not mounted read-only.
    """
    uid, gid = os.geteuid(), os.getegid()
    for directory, _, files in os.walk(root):
        for path in [Path(directory), *(Path(directory) / name for name in files)]:
            mode = path.lstat().st_mode
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(mode):
                readable = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                searchable = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
                keep = stat.S_IMODE(mode) & ~(stat.S_IWGRP | stat.S_IWOTH)
                extra = readable | (searchable if stat.S_ISDIR(mode) else 0)
                path.chmod(keep | extra)
