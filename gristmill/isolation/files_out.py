"""The files a job asked to get back (`Job.output_files`), taken out of its sandbox.

A job's /job is a tmpfs inside its sandbox, gone with it. The supervisor opens it when
the jail is built (`open_job_dir`), which keeps it alive past the jail's end. When the
request is there (a file the service leaves in the workspace before the job runs; a warm
sandbox's job is known only at its hand-over), the supervisor's exit report names its
descriptor, and the service copies the matching files into the workspace (`collect`)
through it, then closes the supervisor's control pipe, which lets the tmpfs go.

The job's directory is hostile ground: it is walked through descriptors without
following a link, only regular files are read (a FIFO would block, a device is not a
file), and the bounds in the request hold however many files it made. Standard library
only: the fork server imports this module.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

REQUEST = "files_out.json"
"""The request in the workspace: {"patterns": [...], "max_files": N, "max_bytes": N}."""
COLLECTED = "files_out"
"""Where the copies go in the workspace, by their paths under /job."""
MAX_DEPTH = 32
MAX_ENTRIES = 100_000
"""Directory entries looked at, at most: a job may leave millions of empty files."""


def open_job_dir(path: str) -> int:
    """A descriptor of the job's directory, kept open so that it outlives the jail; -1
    if it cannot be opened (then nothing is collected)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1


def matches(pattern: str, path: str) -> bool:
    """Whether `path` (relative, '/'-separated) fits `pattern`: `*` and `?` within one
    component, `**` any number of components."""
    want, have = PurePosixPath(pattern).parts, PurePosixPath(path).parts
    seen: dict[tuple[int, int], bool] = {}

    def at(i: int, j: int) -> bool:
        if (i, j) not in seen:
            if i == len(want):
                seen[i, j] = j == len(have)
            elif want[i] == "**":
                seen[i, j] = at(i + 1, j) or (j < len(have) and at(i, j + 1))
            else:
                seen[i, j] = (
                    j < len(have) and fnmatch.fnmatchcase(have[j], want[i]) and at(i + 1, j + 1)
                )
        return seen[i, j]

    return at(0, 0)


def _copy(dir_fd: int, name: str, target: Path, budget: int) -> int:
    """Copies the regular file `name` to `target`, at most `budget` bytes; its size, or -1
    if it is not a regular file. A size over `budget` means it was cut."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return -1
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return -1
        data = os.read(fd, min(info.st_size, budget + 1)) if info.st_size else b""
        target.parent.mkdir(parents=True, exist_ok=True)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(out, data[:budget])
        finally:
            os.close(out)
        return max(info.st_size, len(data))
    finally:
        os.close(fd)


def collect(job_dir_fd: int, workspace: str) -> dict[str, Any]:
    """Copies what the request in `workspace` asks for; what it did, for the exit report:
    {"files": n, "bytes": n, "overflow": why the bound was reached, or ""}."""
    request_path = Path(workspace) / REQUEST
    if job_dir_fd < 0 or not request_path.exists():
        return {}
    request = json.loads(request_path.read_text())
    patterns, max_files, budget = request["patterns"], request["max_files"], request["max_bytes"]
    out = Path(workspace) / COLLECTED
    files = total = entries = 0
    for where, dirs, names, dir_fd in os.fwalk(".", dir_fd=job_dir_fd, follow_symlinks=False):
        dirs.sort()
        depth = len(PurePosixPath(where).parts)
        if depth >= MAX_DEPTH:
            dirs.clear()
        entries += len(dirs) + len(names)
        if entries > MAX_ENTRIES:
            return _summary(files, total, f"more than {MAX_ENTRIES} entries under /job")
        for name in sorted(names):
            relative = str(PurePosixPath(where, name))
            if not any(matches(pattern, relative) for pattern in patterns):
                continue
            if files == max_files:
                return _summary(files, total, f"more than {max_files} files")
            size = _copy(dir_fd, name, out / relative, budget - total)
            if size < 0:
                continue
            if total + size > budget:
                (out / relative).unlink()  # a file cut short is not returned
                return _summary(files, total, f"more than {budget} bytes of files")
            files += 1
            total += size
    return _summary(files, total, "")


def _summary(files: int, total: int, overflow: str) -> dict[str, Any]:
    return {"files": files, "bytes": total, "overflow": overflow}
