"""The files a job asked to get back (`Job.output_files`), taken out of its sandbox.

A job's /job is a tmpfs inside its sandbox, gone with it. The supervisor opens it when
the jail is built (`open_job_dir`), which keeps it alive past the jail's end. When the
request is there (a file the service leaves in the workspace before the job runs; a warm
sandbox's job is known only at its hand-over), the supervisor's exit report names its
descriptor, and the service copies the matching files into the workspace (`collect`)
through it, then closes the supervisor's control pipe, which lets the tmpfs go.

The job's directory is hostile ground, and the service reads it with its own rights: it
is walked through descriptors, one name at a time, never following a link nor leaving
the tmpfs (its device); only regular files are opened (a FIFO would block, a device's
open can act); a directory is entered only if a pattern could match below it; and every
bound holds however many files, names or bytes the job made, and whatever the request's
patterns are (entries listed, depth, path length, matching steps, files, bytes). Names
that are not UTF-8 match no pattern: a pattern, and `File.path`, are text. Standard
library only: the fork server imports this module.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

REQUEST = "files_out.json"
"""The request in the workspace: {"patterns": [...], "max_files": N, "max_bytes": N}."""
COLLECTED = "files_out"
"""Where the copies go in the workspace, by their paths under /job."""
MAX_DEPTH = 32
"""Directories below /job walked into, at most."""
MAX_PATH_BYTES = 1024
"""The longest path under /job a file comes back by (32 names of 255 bytes would be 8 KiB,
twice the kernel's PATH_MAX for the copy's path in the workspace)."""
MAX_ENTRIES = 100_000
"""Directory entries listed, at most: a job may leave millions of empty files."""
MAX_MATCH_STEPS = 1_000_000
"""Name-against-pattern comparisons, at most (about a second of the service's CPU; ten
patterns against 100,000 names): 64 patterns of many components would take billions."""

_State = tuple[int, int]
"""A pattern (its index) and how many of its components the path so far has matched."""


class _Overflow(Exception):
    """A bound was reached: the files taken so far come back, and the job is told why."""


class _Patterns:
    """The request's patterns run side by side over a path's components, one at a time,
    so that a directory's state is computed once for all that lies below it."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._parts = [parts for parts in map(_components, patterns) if parts is not None]
        self.steps = 0

    def start(self) -> frozenset[_State]:
        return self._closure((index, 0) for index in range(len(self._parts)))

    def step(self, states: frozenset[_State], name: str) -> frozenset[_State]:
        """The states after one more component, `name`."""
        after: list[_State] = []
        for index, at in states:
            parts = self._parts[index]
            if at == len(parts):
                continue
            if parts[at] == "**":
                after.append((index, at))
                continue
            self.steps += 1
            if self.steps > MAX_MATCH_STEPS:
                raise _Overflow(f"the patterns took more than {MAX_MATCH_STEPS} comparisons")
            if fnmatch.fnmatchcase(name, parts[at]):
                after.append((index, at + 1))
        return self._closure(after)

    def matched(self, states: frozenset[_State]) -> bool:
        """Whether the path so far is one a pattern names."""
        return any(at == len(self._parts[index]) for index, at in states)

    def below(self, states: frozenset[_State]) -> bool:
        """Whether a path longer than this one could still be named."""
        return any(at < len(self._parts[index]) for index, at in states)

    def _closure(self, states: Iterable[_State]) -> frozenset[_State]:
        """With each `**` also matching no component (never two in a row: `_components`)."""
        closed: set[_State] = set()
        for index, at in states:
            closed.add((index, at))
            if at < len(self._parts[index]) and self._parts[index][at] == "**":
                closed.add((index, at + 1))
        return frozenset(closed)


def _components(pattern: str) -> tuple[str, ...] | None:
    """The pattern's components with each run of `**` made one (the same paths match);
    None if it names nothing the walk can reach (more components than `MAX_DEPTH` allows)."""
    parts: list[str] = []
    for part in PurePosixPath(pattern).parts:
        if part != "**" or not parts or parts[-1] != "**":
            parts.append(part)
    return tuple(parts) if sum(part != "**" for part in parts) <= MAX_DEPTH + 1 else None


def matches(pattern: str, path: str) -> bool:
    """Whether `path` (relative, '/'-separated) fits `pattern`: `*` and `?` within one
    component, `**` any number of components."""
    patterns = _Patterns([pattern])
    states = patterns.start()
    for name in PurePosixPath(path).parts:
        states = patterns.step(states, name)
    return patterns.matched(states)


def open_job_dir(path: str) -> int:
    """A descriptor of the job's directory, kept open so that it outlives the jail; -1
    if it cannot be opened (then nothing is collected)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


class _Collection:
    """One walk of a job's directory for one request, and its bounds."""

    def __init__(self, request: dict[str, Any], device: int, out: Path) -> None:
        self.patterns = _Patterns(request["patterns"])
        self.max_files: int = request["max_files"]
        self.max_bytes: int = request["max_bytes"]
        self.device, self.out = device, out
        self.files = self.bytes = self.entries = 0

    def directory(self, dir_fd: int, path: tuple[str, ...], states: frozenset[_State]) -> None:
        """Takes what matches in the directory open at `dir_fd` (`path` under /job)."""
        listed = []
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                self.entries += 1
                if self.entries > MAX_ENTRIES:
                    raise _Overflow(f"more than {MAX_ENTRIES} entries under /job")
                listed.append(entry)
        for entry in sorted(listed, key=lambda e: e.name):
            if not _is_text(entry.name):
                continue
            here = self.patterns.step(states, entry.name)
            relative = (*path, entry.name)
            if entry.is_dir(follow_symlinks=False) and self.patterns.below(here):
                self._enter(dir_fd, relative, here)
            elif entry.is_file(follow_symlinks=False) and self.patterns.matched(here):
                self._take(dir_fd, relative)

    def _enter(self, dir_fd: int, path: tuple[str, ...], states: frozenset[_State]) -> None:
        _within_bounds(path, MAX_DEPTH)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path[-1], flags, dir_fd=dir_fd)
        except OSError:
            return  # gone, or closed to the service: like any file it cannot take
        try:
            if os.fstat(fd).st_dev == self.device:
                self.directory(fd, path, states)
        finally:
            os.close(fd)

    def _take(self, dir_fd: int, path: tuple[str, ...]) -> None:
        """Copies the regular file `path[-1]` of `dir_fd` whole, or nothing of it."""
        _within_bounds(path, MAX_DEPTH + 1)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(path[-1], flags, dir_fd=dir_fd)
        except OSError:
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_dev != self.device:
                return  # replaced since it was listed
            if self.files == self.max_files:
                raise _Overflow(f"more than {self.max_files} files")
            data = _read_at_most(fd, self.max_bytes - self.bytes + 1)
        finally:
            os.close(fd)
        if self.bytes + len(data) > self.max_bytes:
            raise _Overflow(f"more than {self.max_bytes} bytes of files")  # never cut short
        target = self.out.joinpath(*path)
        target.parent.mkdir(parents=True, exist_ok=True)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(out, data)
        finally:
            os.close(out)
        self.files += 1
        self.bytes += len(data)


def _is_text(name: str) -> bool:
    """Whether a name (decoded as the file system's, with surrogate escapes) is UTF-8."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _within_bounds(path: tuple[str, ...], components: int) -> None:
    """Refuses a path past the walk's depth or length, once a pattern could name it."""
    if len(path) > components:
        raise _Overflow(f"a path deeper than {MAX_DEPTH} directories under /job")
    if len("/".join(path).encode()) > MAX_PATH_BYTES:
        raise _Overflow(f"a path longer than {MAX_PATH_BYTES} bytes under /job")


def _read_at_most(fd: int, limit: int) -> bytes:
    """The file's bytes up to `limit`, whatever its size said: it may still be growing."""
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def collect(job_dir_fd: int, workspace: str) -> dict[str, Any]:
    """Copies what the request in `workspace` asks for; what it did, for the exit report:
    {"files": n, "bytes": n, "overflow": why a bound was reached, or ""}."""
    request_path = Path(workspace) / REQUEST
    if job_dir_fd < 0 or not request_path.exists():
        return {}
    request = json.loads(request_path.read_text())
    walk = _Collection(request, os.fstat(job_dir_fd).st_dev, Path(workspace) / COLLECTED)
    overflow = ""
    try:
        walk.directory(job_dir_fd, (), walk.patterns.start())
    except _Overflow as bound:
        overflow = str(bound)
    return {"files": walk.files, "bytes": walk.bytes, "overflow": overflow}
