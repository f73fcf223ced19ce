"""Paths from a request or a resolver, kept inside the job's directory."""

from __future__ import annotations

from pathlib import PurePosixPath

from gristmill.errors import InvalidRequest

__all__ = ["MAX_PATH_DEPTH", "safe_relative_path"]

MAX_PATH_DEPTH = 16


def safe_relative_path(path: str, field: str) -> PurePosixPath:
    """`path` as a relative path that cannot leave the job directory, or InvalidRequest."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or len(pure.parts) > MAX_PATH_DEPTH:
        raise InvalidRequest(field, f"{path!r} must be a relative path inside the job directory")
    return pure
