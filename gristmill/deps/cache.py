"""The environment cache: each environment built once, renamed into place, shared read-only.

An "environment" here is any directory built from a key: installed dependencies
(`deps.manager`), or a job's compiled output (`jobs.build`, under a root of its own).
The cache knows only digests and a builder; what goes in is the caller's business.

Layout under the cache root (mode 0711, as are `envs/` and `tmp/`: the jail's user
must traverse them to reach the one environment mounted for it, but no other local
user may list which environments exist):

    envs/<digest>/         finished environments, sealed (owned by the service, no one
                           else may write, no setuid, setgid or sticky bit, nothing but
                           regular files, directories and symlinks), their mtime the
                           last time a job used them
    tmp/<digest>.<random>  environments being built, or being deleted
    locks/<digest>.build   held exclusively while <digest> is built or deleted (0700:
                           only the service opens them)
    locks/<digest>.use     held shared by every job using <digest>; eviction needs it
                           exclusively, so an environment in use is never removed

A build is bounded by the cache's budget while it runs (`within_budget`): one that
writes more than the whole budget into its directory is stopped (its sandbox killed)
and fails with `OverBudget`, naming the budget's setting, and nothing of it is kept.
Sizes count every file, directory and symlink at one block at least, so that a tree
of a million empty files is not free (its inodes and directory entries are disk too).

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gristmill.deps.locks import flock, open_lock, try_flock
from gristmill.observability import metrics

__all__ = [
    "Builder",
    "EnvironmentCache",
    "Lease",
    "OverBudget",
    "Unsealable",
    "tree_size",
    "within_budget",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

Builder = Callable[[Path], Awaitable[None]]
"""Fills the empty directory it is given with the environment, or raises."""

_DIRECTORY_MODES = {".": 0o711, "envs": 0o711, "tmp": 0o711, "locks": 0o700}
"""Searchable, not listable, by the jail's user, who only needs a path it is given."""
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
"""Never kept: a setuid file owned by the service's user (root) would run as root."""
ENTRY_BYTES = 4096
"""What `tree_size` counts a file, directory or symlink at the least: one block."""
BUDGET_POLL_S = 0.25
"""How often `within_budget` measures at the most (less often for a tree slow to measure)."""


class Unsealable(Exception):
    """A build left something no environment may hold (a device node, a fifo, a socket).

    What was built is the sandbox's doing, so the caller reports this as its build
    failing (`DependencyFailure`, `BuildFailure`); the cache has kept nothing of it.
    """


class OverBudget(Unsealable):
    """A step wrote more into a cache than its budget allows: it was stopped, and the
    caller reports its build (or resolve) failing; nothing of what it wrote is kept."""


async def within_budget(
    work: Awaitable[T], directory: Path, max_bytes: int, what: str, setting: str
) -> T:
    """Awaits `work` while `directory` grows by at most `max_bytes` (`tree_size`); past
    that, cancels it (a step's sandbox is killed with it) and raises `OverBudget`, whose
    message names `what` wrote too much and the budget's `setting`.

    Measured every `BUDGET_POLL_S`, or ten times as long as measuring took (so that a big
    tree costs a tenth of a core at most), and once more at the end: what a caller keeps
    never passes the budget, though a writer may overshoot it between two measurements.
    """
    start = await asyncio.to_thread(tree_size, directory)
    task = asyncio.ensure_future(work)
    interval = BUDGET_POLL_S
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            began = time.monotonic()
            grown = await asyncio.to_thread(tree_size, directory) - start
            interval = max(BUDGET_POLL_S, 10 * (time.monotonic() - began))
            if grown > max_bytes:
                raise OverBudget(f"{what} wrote more than {max_bytes} bytes ({setting}): stopped")
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
        # Waits for a cancelled step's end; retrieves an error `OverBudget` took over from.
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class _Turn:
    """This process's queue for building one digest, dropped when no one is in it."""

    lock: asyncio.Lock
    # Callers in or waiting for `lock`: the last one out removes the turn.
    users: int = 0


@dataclass(frozen=True)
class Lease:
    """An environment a job may use until the lease ends."""

    path: Path
    # False when this call built it.
    cached: bool


class EnvironmentCache:
    def __init__(self, root: Path, max_bytes: int, setting: str = "the cache's budget") -> None:
        self.root = root
        self.max_bytes = max_bytes
        # The budget's name in a failed build's message (e.g. "deps.cache_max_bytes").
        self.setting = setting
        self._envs = root / "envs"
        self._tmp = root / "tmp"
        self._locks = root / "locks"
        for directory, mode in _DIRECTORY_MODES.items():
            path = root / directory
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
        self._building: dict[str, _Turn] = {}
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
        use_fd = open_lock(self._locks / f"{digest}.use")
        try:
            await flock(use_fd, fcntl.LOCK_SH)
            cached = True
            if not self._exists(digest):
                cached = await self._build_once(digest, build)
            metrics.CACHE_LOOKUPS.labels(self.root.name, "hit" if cached else "miss").inc()
            _touch(self.path(digest))
            try:
                yield Lease(self.path(digest), cached)
            finally:
                _touch(self.path(digest))
        finally:
            os.close(use_fd)

    @contextlib.asynccontextmanager
    async def hold(self, digest: str) -> AsyncIterator[Path]:
        """The entry `digest`, kept from eviction until the block ends, neither built nor
        counted as a lookup (a warm sandbox waits with it mounted); LookupError if it is
        not in the cache."""
        use_fd = open_lock(self._locks / f"{digest}.use")
        try:
            await flock(use_fd, fcntl.LOCK_SH)
            if not self._exists(digest):
                raise LookupError(f"{digest} is no longer in the cache")
            yield self.path(digest)
        finally:
            os.close(use_fd)

    async def _build_once(self, digest: str, build: Builder) -> bool:
        """Builds `digest` unless someone finished it while we waited; True if they did."""
        async with self._turn(digest):
            build_fd = open_lock(self._locks / f"{digest}.build")
            try:
                await flock(build_fd, fcntl.LOCK_EX)
                if self._exists(digest):
                    return True
                staging = await asyncio.to_thread(self._staging, digest)
                try:
                    await within_budget(
                        build(staging), staging, self.max_bytes, "the step", self.setting
                    )
                    await asyncio.to_thread(self._publish, staging, digest)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
            finally:
                os.close(build_fd)
        await asyncio.to_thread(self.evict)
        return False

    @contextlib.asynccontextmanager
    async def _turn(self, digest: str) -> AsyncIterator[None]:
        """Holds this process's lock for building `digest`; the last holder drops it,
        so that the table holds only the digests being built, not every one ever built."""
        turn = self._building.setdefault(digest, _Turn(asyncio.Lock()))
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._building[digest]

    def _staging(self, digest: str) -> Path:
        staging = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=self._tmp))
        staging.chmod(0o755)
        return staging

    def _publish(self, staging: Path, digest: str) -> None:
        """Seals a finished build and renames it into place: it appears whole or not at all.

        Raises `Unsealable` (and the caller removes `staging`) for what may not be kept.
        """
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
                entries.append((path.stat().st_mtime, path.name, tree_size(path)))
        total = sum(size for _, _, size in entries)
        removed = []
        for _, digest, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if self._remove(digest):
                total -= size
                removed.append(digest)
        metrics.CACHE_BYTES.labels(self.root.name).set(total)
        return removed

    def _remove(self, digest: str) -> bool:
        """Removes `digest` if no one uses or builds it; False if someone does."""
        use_fd = open_lock(self._locks / f"{digest}.use")
        build_fd = open_lock(self._locks / f"{digest}.build")
        try:
            if not (try_flock(use_fd, fcntl.LOCK_EX) and try_flock(build_fd, fcntl.LOCK_EX)):
                return False
            doomed = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=self._tmp))
            try:
                self.path(digest).rename(doomed / "env")
            except FileNotFoundError:
                return False
            finally:
                shutil.rmtree(doomed, ignore_errors=True)
            log.info("evicted environment %s", digest)
            metrics.CACHE_EVICTIONS.labels(self.root.name).inc()
            return True
        finally:
            os.close(build_fd)
            os.close(use_fd)

    def _remove_stale(self) -> None:
        """Removes what builds and evictions of dead processes left in `tmp/`."""
        for leftover in self._tmp.iterdir():
            digest = leftover.name.partition(".")[0]
            build_fd = open_lock(self._locks / f"{digest}.build")
            try:
                if try_flock(build_fd, fcntl.LOCK_EX):
                    shutil.rmtree(leftover, ignore_errors=True)
            finally:
                os.close(build_fd)


def _touch(path: Path) -> None:
    """Marks the environment used now: eviction removes the least recently used first."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


def tree_size(root: Path) -> int:
    """The bytes of the files, directories and symlinks under `root` (symlinks not
    followed), each counted at its size or its blocks, whichever is more (`fallocate`
    with KEEP_SIZE gives a file of size 0 any disk, past RLIMIT_FSIZE too), and at
    `ENTRY_BYTES` at least. (`os.scandir`, not `os.walk` and paths: five times as fast,
    and a step's budget is measured over and over.)"""
    total = 0
    pending = [str(root)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    info = entry.stat(follow_symlinks=False)
                    total += max(info.st_size, info.st_blocks * 512, ENTRY_BYTES)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
    return total


def _seal(root: Path) -> None:
    """Makes a finished environment the service's own and read-only to everyone else.

    It was built by the sandbox's unprivileged user, which is also the user jobs run
    as: sealed, no job can change it even where it is not mounted read-only. Whatever
    that user did to it is undone: owner, write bits for others, and the setuid,
    setgid and sticky bits (chowned to the service's user, usually root, a setuid
    file in a path others can reach would run as root). A device node, fifo or socket
    is refused rather than kept: an environment is files, directories and symlinks.

    Each entry is changed through a descriptor opened without following symlinks and
    checked to be the entry that was inspected, so that nothing outside `root` is
    touched even if the tree changed under the walk.
    """
    uid, gid = os.geteuid(), os.getegid()
    for directory, _, files in os.walk(root):
        for path in [Path(directory), *(Path(directory) / name for name in files)]:
            status = path.lstat()
            if stat.S_ISLNK(status.st_mode):
                os.lchown(path, uid, gid)
            elif stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode):
                _seal_entry(path, status, uid, gid)
            else:
                raise Unsealable(
                    f"the build left {path.relative_to(root)}, which is not a regular file, "
                    "directory or symlink"
                )


def _seal_entry(path: Path, seen: os.stat_result, uid: int, gid: int) -> None:
    """Chowns and chmods the regular file or directory `path`, `seen` by `lstat`."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags | (os.O_DIRECTORY if stat.S_ISDIR(seen.st_mode) else 0))
    try:
        status = os.fstat(fd)
        if (status.st_dev, status.st_ino) != (seen.st_dev, seen.st_ino):
            raise Unsealable(f"{path.name} changed while the build was being sealed")
        os.fchown(fd, uid, gid)
        readable = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
        searchable = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        keep = stat.S_IMODE(status.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH | _SPECIAL_BITS)
        os.fchmod(fd, keep | readable | (searchable if stat.S_ISDIR(status.st_mode) else 0))
    finally:
        os.close(fd)
