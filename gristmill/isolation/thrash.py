"""Telling a job that thrashes at its memory limit, which the kernel does not end.

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

GRACE_NS = 500_000_000
"""A job thrashing this long is stopped (the kernel's own OOM kill comes within ms)."""
EPISODE_NS = 1_000_000_000
"""Refaults further apart than this are separate episodes, each with its own grace."""


def _keyed(text: str, key: str) -> int:
    """The value of `key` in a "key value" a line text (memory.stat); -1 if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return -1


def _number(fd: int) -> int:
    """The number a cgroup file holds; 0 if unreadable or not a number ("max")."""
    try:
        return int(os.pread(fd, 64, 0))
    except (OSError, ValueError):
        return 0


class ThrashWatch:
    """Watches one job's memory group: its usage, limit and memory.stat files."""

    def __init__(self, usage_file: str, limit_file: str, stat_file: str) -> None:
        self._usage = os.open(usage_file, os.O_RDONLY | os.O_CLOEXEC)
        self._limit = os.open(limit_file, os.O_RDONLY | os.O_CLOEXEC)
        self._stat = os.open(stat_file, os.O_RDONLY | os.O_CLOEXEC)
        self._refaults = -1
        self._episode = (0, 0)  # first and last refault seen while full, monotonic ns

    def stuck(self, now: int) -> bool:
        """Whether the job has thrashed at its memory limit for longer than the grace."""
        usage, limit = _number(self._usage), _number(self._limit)
        full = limit - limit // 16
        text = ""
        if limit > 0 and usage >= full:
            try:
                text = os.pread(self._stat, 8192, 0).decode()
            except OSError:
                return False
        # v2 says "anon", v1 "rss"; both "shmem" (tmpfs: without swap, not reclaimable).
        anonymous = max(_keyed(text, "anon"), _keyed(text, "rss"), 0)
        if not text or anonymous + max(_keyed(text, "shmem"), 0) < full:
            self._episode = (0, 0)  # room left
            return False
        refaults = _keyed(text, "workingset_refault_file")
        rising = 0 <= self._refaults < refaults
        self._refaults = refaults
        first, last = self._episode
        if first and now - last > EPISODE_NS:
            first = 0
        if rising:
            first, last = first or now, now
        self._episode = (first, last)
        return bool(first) and now - first >= GRACE_NS
