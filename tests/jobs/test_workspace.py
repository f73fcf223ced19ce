"""A job's workspace on the host: private to the service, and not left behind for good."""

from __future__ import annotations

import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gristmill.jobs.workspace import Workspace, copy_runtimes, remove_stale
from gristmill.model import Job, Limits


def _job() -> Job:
    return Job("w", "python", "secret = 1", "main", {}, Limits(1000, 64 << 20, 1000, 4, 1024))


def test_a_workspace_is_private_to_the_service_and_the_jails_uid(tmp_path: Path) -> None:
    uid, gid = os.getuid(), os.getgid()
    workspace = Workspace.create(tmp_path, _job(), "main.py", uid, gid)
    info = workspace.base.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (info.st_uid, info.st_gid) == (uid, gid)


def test_workspaces_of_a_server_that_died_are_removed_at_the_next_start(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"{gone.pid}-0123"
    (stale / "job").mkdir(parents=True)
    live = Workspace.create(tmp_path, _job(), "main.py", os.getuid(), os.getgid())
    assert remove_stale(tmp_path) == 1
    assert not stale.exists()
    assert live.base.exists()


def test_servers_sharing_a_work_directory_each_copy_the_languages_for_themselves(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "repo" / "python"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "wrapper.py").write_text("print(1)\n")
    runtimes = tmp_path / "work" / "runtimes"
    with ThreadPoolExecutor(4) as pool:
        copies = list(pool.map(lambda _: copy_runtimes({"python": folder}, runtimes), range(4)))
    assert len(set(copies)) == 4
    for copy in copies:
        assert (copy / "python" / "wrapper.py").read_text() == "print(1)\n"
        assert not (copy / "python" / "__pycache__").exists()
        assert stat.S_IMODE((copy / "python" / "wrapper.py").stat().st_mode) == 0o644
    # A server that starts later leaves the live servers' copies alone...
    later = copy_runtimes({"python": folder}, runtimes)
    assert all(copy.exists() for copy in copies)
    # ...and removes those of servers that are gone.
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = runtimes / f"{gone.pid}-0123"
    copies[0].rename(dead)
    copy_runtimes({"python": folder}, runtimes)
    assert not dead.exists()
    assert later.exists()
