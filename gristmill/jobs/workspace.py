"""A job's directories on the host: its own files (mounted at /job) and its jail's root."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gristmill.isolation import files_out, linux
from gristmill.model import Job, JobFile
from gristmill.steps.paths import safe_relative_path

JOBS_TMPFS_BYTES = 2 * 1024 * 1024 * 1024
"""The size of the tmpfs that holds the workspaces (their files are small and brief)."""


def mount_jobs_dir(jobs_dir: Path) -> bool:
    """Puts the workspaces on a tmpfs of their own, unless they already are (a server
    sharing the work directory, or a killed one, mounted it: `remove_stale` clears what
    the dead left).

    A workspace lives for one job: creating and removing its directories on a disk file
    system (ext4 here) costs ~3 ms a job, on a tmpfs ~0.06 ms. Only root may mount;
    elsewhere the workspaces stay on the work directory's own file system. True if the
    workspaces are on a tmpfs.
    """
    jobs_dir.mkdir(mode=0o755, exist_ok=True)
    if os.path.ismount(jobs_dir):
        return True
    if os.geteuid() != 0:
        return False
    try:
        linux.mount(
            "tmpfs",
            str(jobs_dir),
            "tmpfs",
            linux.MS_NOSUID | linux.MS_NODEV,
            f"size={JOBS_TMPFS_BYTES},mode=0755",
        )
    except OSError:
        return False
    return True


def unmount_jobs_dir(jobs_dir: Path, *, force: bool = False) -> None:
    """Unmounts the workspaces' tmpfs once no server has a workspace there (or `force`)."""
    if not os.path.ismount(jobs_dir):
        return
    with contextlib.suppress(OSError):
        if force or not any(jobs_dir.iterdir()):
            linux.umount2(str(jobs_dir), linux.MNT_DETACH)


def server_entry_name() -> str:
    """A name for a directory of this server's own, told apart by `remove_stale`."""
    return f"{os.getpid()}-{uuid.uuid4().hex}"


def remove_stale(jobs_dir: Path) -> int:
    """Removes what servers that are gone (e.g. SIGKILLed) left in `jobs_dir`, entries
    named by `server_entry_name`; how many it removed.

    Those of live servers, this one included, are left alone: several servers may
    share a work directory.
    """
    removed = 0
    for base in jobs_dir.iterdir():
        pid, separator, _ = base.name.partition("-")
        if not separator or not pid.isdigit() or int(pid) == os.getpid():
            continue
        if not Path(f"/proc/{pid}").exists():
            shutil.rmtree(base, ignore_errors=True)
            removed += 1
    return removed


def copy_runtimes(folders: Mapping[str, Path], runtimes_dir: Path) -> Path:
    """Copies each language's folder (name -> folder) into a directory of this server's
    own under `runtimes_dir`, readable by everyone; that directory.

    The jail's unprivileged uid reads them there: the repository may live where it
    cannot (e.g. under /root). Servers sharing a work directory each have their own
    copy, so that one starting never rewrites a folder another's jobs are reading.
    """
    runtimes_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    remove_stale(runtimes_dir)
    own = runtimes_dir / server_entry_name()
    own.mkdir(mode=0o755)
    for name, folder in folders.items():
        shutil.copytree(folder, own / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in own.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return own


@dataclass(frozen=True)
class Workspace:
    base: Path
    job_dir: Path
    root_dir: Path

    @classmethod
    def create(
        cls,
        jobs_dir: Path,
        job: Job,
        source_file: str,
        uid: int,
        gid: int,
        generated: Mapping[str, bytes] | None = None,
    ) -> Workspace:
        """The job's code as `source_file`, its files, and `generated` (what the language's
        plugin wrote for a build step), all owned by the sandbox's `uid`/`gid`."""
        workspace = cls.empty(jobs_dir, uid, gid)
        workspace.fill(job, source_file, uid, gid, generated)
        return workspace

    @classmethod
    def empty(cls, jobs_dir: Path, uid: int, gid: int) -> Workspace:
        """A workspace with no job yet (a warm sandbox's, filled at its hand-over; a prime
        step's, which has none), its job directory owned by the sandbox's `uid`/`gid`."""
        # Named for this server's pid, so that a server started later can tell which
        # workspaces a killed one left behind (`remove_stale`).
        base = jobs_dir / server_entry_name()
        job_dir, root_dir = base / "job", base / "root"
        # Private to the service and the jail's uid (the supervisor reads the files as
        # that uid on the process backend): no other local user may read a tenant's code.
        base.mkdir(mode=0o700)
        os.chown(base, uid, gid)
        root_dir.mkdir(mode=0o755)
        job_dir.mkdir(mode=0o755)
        os.chown(job_dir, uid, gid)
        return cls(base, job_dir, root_dir)

    def fill(
        self,
        job: Job,
        source_file: str,
        uid: int,
        gid: int,
        generated: Mapping[str, bytes] | None = None,
    ) -> None:
        """Writes the job's files (see `create`); on failure the workspace is removed."""
        try:
            self._write(source_file, job.code.encode(), executable=False, uid=uid, gid=gid)
            for index, extra in enumerate(job.files):
                relative = safe_relative_path(extra.path, f"job.files[{index}].path")
                self._write(str(relative), extra.content, extra.executable, uid, gid)
            for path, content in (generated or {}).items():
                self._write(str(safe_relative_path(path, "generated")), content, False, uid, gid)
            os.chown(self.job_dir, uid, gid)
        except BaseException:
            self.remove()
            raise

    def _write(self, relative: str, content: bytes, executable: bool, uid: int, gid: int) -> None:
        target = self.job_dir / relative
        for parent in reversed(target.relative_to(self.job_dir).parents[:-1]):
            directory = self.job_dir / parent
            if not directory.is_dir():
                directory.mkdir()
                os.chown(directory, uid, gid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(target, flags, 0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.chown(target, uid, gid)

    def ask_files(self, patterns: tuple[str, ...], max_files: int, max_bytes: int) -> None:
        """Asks the sandbox's supervisor to take out these files when the job ends."""
        request = {"patterns": list(patterns), "max_files": max_files, "max_bytes": max_bytes}
        (self.base / files_out.REQUEST).write_text(json.dumps(request))

    def files_out(self) -> tuple[JobFile, ...]:
        """The files the supervisor took out (`ask_files`), by path under /job."""
        root = self.base / files_out.COLLECTED
        found = []
        for where, _dirs, names in os.walk(root):
            for name in names:
                path = Path(where) / name
                found.append(JobFile(str(path.relative_to(root)), path.read_bytes()))
        return tuple(sorted(found, key=lambda f: f.path))

    def remove(self) -> None:
        """Deletes everything the job left; links it planted are removed, never followed."""
        shutil.rmtree(self.base, ignore_errors=True)
