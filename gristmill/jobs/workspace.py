"""A job's directories on the host: its own files (mounted at /job) and its jail's root."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gristmill.errors import InvalidRequest
from gristmill.model import Job

MAX_PATH_DEPTH = 16


def safe_relative_path(path: str, field: str) -> PurePosixPath:
    """`path` as a relative path that cannot leave the job directory, or InvalidRequest."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or len(pure.parts) > MAX_PATH_DEPTH:
        raise InvalidRequest(field, f"{path!r} must be a relative path inside the job directory")
    return pure


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
        base = jobs_dir / uuid.uuid4().hex
        job_dir, root_dir = base / "job", base / "root"
        base.mkdir(mode=0o755)
        root_dir.mkdir(mode=0o755)
        job_dir.mkdir(mode=0o755)
        workspace = cls(base, job_dir, root_dir)
        try:
            workspace._write(source_file, job.code.encode(), executable=False, uid=uid, gid=gid)
            for index, extra in enumerate(job.files):
                relative = safe_relative_path(extra.path, f"job.files[{index}].path")
                workspace._write(str(relative), extra.content, extra.executable, uid, gid)
            for path, content in (generated or {}).items():
                workspace._write(
                    str(safe_relative_path(path, "generated")), content, False, uid, gid
                )
            os.chown(job_dir, uid, gid)
        except BaseException:
            workspace.remove()
            raise
        return workspace

    @classmethod
    def empty(cls, jobs_dir: Path, uid: int, gid: int) -> Workspace:
        """A job directory with nothing in it, owned by the sandbox's `uid`/`gid`."""
        base = jobs_dir / uuid.uuid4().hex
        job_dir, root_dir = base / "job", base / "root"
        base.mkdir(mode=0o755)
        root_dir.mkdir(mode=0o755)
        job_dir.mkdir(mode=0o755)
        os.chown(job_dir, uid, gid)
        return cls(base, job_dir, root_dir)

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

    def remove(self) -> None:
        """Deletes everything the job left; links it planted are removed, never followed."""
        shutil.rmtree(self.base, ignore_errors=True)
