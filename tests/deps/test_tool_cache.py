"""The resolver's download cache keeps to its budget, and is never emptied under a step.

Real directories and real file locks; a second descriptor holding the shared lock
stands for a resolve or install running (in this server or another sharing the cache).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gristmill.deps.locks import open_lock
from gristmill.deps.sandboxed import ToolPaths, trim_cache


def tool_paths(tmp_path: Path, size: int) -> ToolPaths:
    paths = ToolPaths(tmp_path / "tools", tmp_path / "tool-cache" / "uv", tmp_path / "runs")
    (paths.cache_dir / "archive-v0").mkdir(parents=True, mode=0o700)
    (paths.cache_dir / "archive-v0" / "wheel").write_bytes(b"x" * size)
    return paths


def test_a_download_cache_past_its_budget_is_emptied_and_keeps_its_owner(tmp_path):
    paths = tool_paths(tmp_path, size=30_000)
    os.chown(paths.cache_dir, 65534, 65534)
    assert trim_cache(paths, max_bytes=20_000)
    assert list(paths.cache_dir.iterdir()) == []
    status = paths.cache_dir.stat()
    assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (65534, 65534, 0o700)
    assert sorted(p.name for p in paths.cache_dir.parent.iterdir()) == ["uv", "uv.lock"]


def test_a_download_cache_within_its_budget_is_kept(tmp_path):
    paths = tool_paths(tmp_path, size=5000)
    assert not trim_cache(paths, max_bytes=20_000)
    assert (paths.cache_dir / "archive-v0" / "wheel").exists()


def test_a_download_cache_in_use_is_not_emptied(tmp_path):
    paths = tool_paths(tmp_path, size=30_000)
    step = open_lock(paths.cache_lock)
    try:
        fcntl.flock(step, fcntl.LOCK_SH)
        assert not trim_cache(paths, max_bytes=20_000)
        assert (paths.cache_dir / "archive-v0" / "wheel").exists()
    finally:
        os.close(step)
    assert trim_cache(paths, max_bytes=20_000)
