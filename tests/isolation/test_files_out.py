"""Taking a job's files out of its directory: the patterns, the bounds, and what a hostile
directory holds (links out of it, FIFOs, too many entries) never followed, read or waited on."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import pytest

from gristmill.isolation import files_out
from gristmill.isolation.linux import PR_GET_DUMPABLE, file_system_ids


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("report.csv", "report.csv", True),
        ("out/*.png", "out/a.png", True),
        ("out/*.png", "out/deeper/a.png", False),
        ("*.txt", "out/a.txt", False),
        ("**/*.txt", "a.txt", True),
        ("**/*.txt", "out/deeper/a.txt", True),
        ("out/**", "out/a/b/c", True),
        ("out/?.txt", "out/ab.txt", False),
        ("**/**/**/**/**/**/**/**/**/**/**/**/x", "a/b/c/d/e/f/g/h/i/j/k/l/m/n/y", False),
    ],
)
def test_patterns_match_whole_paths_component_by_component(pattern, path, expected):
    assert files_out.matches(pattern, path) is expected


def _collect(tmp_path: Path, patterns: list[str], max_files: int = 100, max_bytes: int = 1 << 20):
    job, workspace = tmp_path / "job", tmp_path / "workspace"
    workspace.mkdir()
    request = {"patterns": patterns, "max_files": max_files, "max_bytes": max_bytes}
    (workspace / files_out.REQUEST).write_text(json.dumps(request))
    fd = files_out.open_job_dir(str(job))
    try:
        summary = files_out.collect(fd, str(workspace))
    finally:
        os.close(fd)
    out = workspace / files_out.COLLECTED
    copied = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return summary, copied


def test_only_regular_files_inside_the_directory_come_out(tmp_path):
    job = tmp_path / "job"
    (job / "out").mkdir(parents=True)
    (job / "out" / "real.txt").write_text("ok")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (job / "out" / "link.txt").symlink_to(secret)
    (job / "out" / "dir").symlink_to(tmp_path)
    os.mkfifo(job / "out" / "fifo.txt")
    summary, copied = _collect(tmp_path, ["out/*.txt", "**/secret.txt"])
    assert copied == {"out/real.txt": b"ok"}
    assert summary == {"files": 1, "bytes": 2, "overflow": ""}


def test_past_the_count_the_rest_is_left_and_the_overflow_said(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    for i in range(5):
        (job / f"{i}.txt").write_text(str(i))
    summary, copied = _collect(tmp_path, ["*.txt"], max_files=3)
    assert sorted(copied) == ["0.txt", "1.txt", "2.txt"]
    assert summary["overflow"] == "more than 3 files"


def test_a_file_past_the_byte_budget_is_not_returned_cut_short(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "a.bin").write_bytes(b"a" * 10)
    (job / "b.bin").write_bytes(b"b" * 10)
    summary, copied = _collect(tmp_path, ["*.bin"], max_bytes=15)
    assert copied == {"a.bin": b"a" * 10}
    assert summary == {"files": 1, "bytes": 10, "overflow": "more than 15 bytes of files"}


def test_nothing_is_collected_without_a_request(tmp_path):
    (tmp_path / "job").mkdir()
    fd = files_out.open_job_dir(str(tmp_path / "job"))
    try:
        assert files_out.collect(fd, str(tmp_path)) == {}
    finally:
        os.close(fd)


def test_writing_files_as_the_jails_user_leaves_the_process_dumpable() -> None:
    """A change of fsuid makes a process undumpable, and the /proc/<pid>/fd of an
    undumpable process is closed to a service without CAP_SYS_PTRACE (in a container):
    the supervisor that copied a job's files must stay open to the service taking them out."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
    with file_system_ids(65534, 65534):
        assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0  # what the kernel does
    assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1
