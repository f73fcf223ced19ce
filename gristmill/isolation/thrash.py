"""Telling a job at its memory limit that the kernel does not end: one that thrashes, and
one whose socket buffers fill it (`SocketWatch`).

A job whose anonymous memory fills its cgroup's limit is OOM-killed, unless the group
also holds file pages: the job's own program, libraries, the files it reads. Reclaim
then evicts those, the job reads them again at once, and to the kernel that is progress,
so its OOM killer never comes: the job runs on at a crawl, its CPU time spent in
reclaim (a Go goroutine bomb whose binary had left the page cache spent 9 s of system
time at its 128 MiB limit, then met its CPU limit). The supervisors (this one and
`nsjail_supervisor.c`, which does the same in C) stop such a job with the memory limit.

Thrashing is told by three things, for longer than a grace: the group within a sixteenth
of its limit; its anonymous and tmpfs memory, which nothing can reclaim without swap, too;
and its evicted file pages read again (`workingset_refault_file` rising). A job at its
limit that streams files, with room left, does not refault; one that re-reads files with a
sixteenth of its limit free of anonymous memory is let run. Either kind of room ends an
episode at once; a poll that finds no new refault does not (a poll comes late on a busy
host, and a thrashing job's usage wavers): only a second without one does.
"""

from __future__ import annotations

import os

from gristmill.isolation.cgroups import keyed

GRACE_NS = 500_000_000
"""A job thrashing this long is stopped (the kernel's own OOM kill comes within ms)."""
EPISODE_NS = 1_000_000_000
"""Refaults further apart than this are separate episodes, each with its own grace."""


def _number(fd: int) -> int:
    """The number a cgroup file holds; 0 if unreadable or not a number ("max")."""
    try:
        return int(os.pread(fd, 64, 0))
    except (OSError, ValueError):
        return 0


class ThrashWatch:
    """Watches one job's memory group: its usage, limit and memory.stat files (opened at
    the first poll: most jobs end before one, and need not pay for opening them)."""

    def __init__(self, usage_file: str, limit_file: str, stat_file: str) -> None:
        self._files = (usage_file, limit_file, stat_file)
        self._fds: tuple[int, ...] = ()
        self._refaults = -1
        self._episode = (0, 0)  # first and last refault seen while full, monotonic ns

    def stuck(self, now: int) -> bool:
        """Whether the job has thrashed at its memory limit for longer than the grace."""
        if not self._fds:
            try:
                self._fds = tuple(os.open(path, os.O_RDONLY | os.O_CLOEXEC) for path in self._files)
            except OSError:
                return False
        usage_fd, limit_fd, stat_fd = self._fds
        usage, limit = _number(usage_fd), _number(limit_fd)
        full = limit - limit // 16
        text = ""
        if limit > 0 and usage >= full:
            try:
                text = os.pread(stat_fd, 8192, 0).decode()
            except OSError:
                return False
        # v2 says "anon", v1 "rss"; both "shmem" (tmpfs: without swap, not reclaimable).
        anonymous = max(keyed(text, "anon"), keyed(text, "rss"), 0)
        if not text or anonymous + max(keyed(text, "shmem"), 0) < full:
            self._episode = (0, 0)  # room left
            return False
        refaults = keyed(text, "workingset_refault_file")
        rising = 0 <= self._refaults < refaults
        self._refaults = refaults
        first, last = self._episode
        if first and now - last > EPISODE_NS:
            first = 0
        if rising:
            first, last = first or now, now
        self._episode = (first, last)
        return bool(first) and now - first >= GRACE_NS


class SocketWatch:
    """Watches what one job's sockets hold (TCP and UDP buffers) beside its memory.

    cgroup v1 charges socket buffers apart from memory, to a counter limited to the
    memory limit (`cgroups._limit_sockets`); at that limit sends wait and datagrams are
    dropped, nothing is killed. v2 charges them to the memory itself, which reclaims
    around them rather than OOM-kill. Either way the job is stopped here once its
    sockets hold a sixteenth of its limit or more and, with its anonymous and tmpfs
    memory (nothing can reclaim those without swap), come within a sixteenth of it: a
    job with one connection beside a full heap is left to the kernel, as before.
    """

    def __init__(self, limit_file: str, stat_file: str, sockets_file: str) -> None:
        # `sockets_file`: v1's kmem.tcp usage; empty on v2, where memory.stat says ("sock").
        self._files = (limit_file, stat_file, sockets_file)
        self._fds: tuple[int, ...] = ()

    def full(self) -> bool:
        """Whether the job's sockets and memory together fill its memory limit."""
        if not self._fds:
            try:
                self._fds = tuple(
                    os.open(path, os.O_RDONLY | os.O_CLOEXEC) if path else -1
                    for path in self._files
                )
            except OSError:
                return False
        limit_fd, stat_fd, sockets_fd = self._fds
        limit = _number(limit_fd)
        sockets = _number(sockets_fd) if sockets_fd >= 0 else -1
        if limit <= 0 or 0 <= sockets < limit // 16:
            return False
        try:
            text = os.pread(stat_fd, 8192, 0).decode()
        except OSError:
            return False
        if sockets < 0:
            sockets = max(keyed(text, "sock"), 0)
        anonymous = max(keyed(text, "anon"), keyed(text, "rss"), 0) + max(keyed(text, "shmem"), 0)
        return sockets >= limit // 16 and sockets + anonymous >= limit - limit // 16
