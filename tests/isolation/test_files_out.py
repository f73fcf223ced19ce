"""Taking a job's files out of its directory: the patterns, the bounds, and what a hostile
directory holds (links out of it, FIFOs, too many entries) never followed, read or waited on."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from gristmill.isolation import files_out
from gristmill.isolation.linux import MNT_DETACH, MS_BIND, PR_GET_DUMPABLE, file_system_ids
from gristmill.jobs.executor import Executor
from gristmill.model import Job, JobFile, Outcome, Verdict
from tests.isolation.conftest import LIMITS
from tests.jobs.test_pool import pooled, warm_run  # noqa: F401 (pooled: a fixture)


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


def _collect(
    tmp_path: Path,
    patterns: list[str],
    max_files: int = 100,
    max_bytes: int = 1 << 20,
    workspace_name: str = "workspace",
):
    job, workspace = tmp_path / "job", tmp_path / workspace_name
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


# What a hostile job's directory holds, and what a hostile request asks for


class _Opened:
    """The names of what was opened in a directory (inotify's IN_OPEN), "" for the
    directory itself: a walk that never opens a thing outside /job shows none there."""

    IN_OPEN = 0x20

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        assert self._libc.inotify_add_watch(self._fd, bytes(directory), self.IN_OPEN) >= 0

    def names(self) -> set[str]:
        try:
            events = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            events = b""
        finally:
            os.close(self._fd)
        names, at = set(), 0
        while at < len(events):
            size = int.from_bytes(events[at + 12 : at + 16], "little")
            names.add(events[at + 16 : at + 16 + size].rstrip(b"\0").decode())
            at += 16 + size
        return names


@pytest.mark.attack("files out")
def test_a_link_to_a_directory_outside_is_never_opened(tmp_path):
    """The old walk (os.fwalk) opened a linked directory before seeing it was a link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    (tmp_path / "job" / "out").mkdir(parents=True)
    (tmp_path / "job" / "out" / "dir").symlink_to(outside)
    (tmp_path / "job" / "out" / "file.txt").symlink_to(outside / "secret.txt")
    opened = _Opened(outside)
    summary, copied = _collect(tmp_path, ["out/**"])
    assert opened.names() == set()
    assert (summary, copied) == ({"files": 0, "bytes": 0, "overflow": ""}, {})


@pytest.mark.attack("files out")
def test_a_mount_inside_the_directory_is_not_walked_into(tmp_path):
    """Nothing is mounted under a jail's /job (a tmpfs) today; were anything (a service's
    cache, a host directory), the walk stays on the job's own file system."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    job = tmp_path / "job"
    job.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", bytes(job), b"tmpfs", 0, b"size=1m") != 0:
        pytest.skip(f"cannot mount here: {os.strerror(ctypes.get_errno())}")
    try:
        (job / "own.txt").write_text("own")
        (job / "mnt").mkdir()
        assert libc.mount(bytes(outside), bytes(job / "mnt"), None, MS_BIND, None) == 0
        try:
            summary, copied = _collect(tmp_path, ["**"])
        finally:
            assert libc.umount2(bytes(job / "mnt"), MNT_DETACH) == 0
    finally:
        assert libc.umount2(bytes(job), MNT_DETACH) == 0
    assert (summary, copied) == ({"files": 1, "bytes": 3, "overflow": ""}, {"own.txt": b"own"})


@pytest.mark.attack("files out")
def test_only_regular_files_are_ever_opened(tmp_path):
    """Opening a device can act (a tape rewinds, a watchdog arms), and the service opens
    as itself: a FIFO, a socket or a device node is skipped unopened."""
    out = tmp_path / "job" / "out"
    out.mkdir(parents=True)
    (out / "real.txt").write_text("ok")
    os.mkfifo(out / "fifo.txt")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(out / "socket.txt"))
    with contextlib.suppress(PermissionError):  # not root: the FIFO and the socket remain
        os.mknod(out / "device.txt", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's
    opened = _Opened(out)
    summary, copied = _collect(tmp_path, ["out/*"])
    assert opened.names() - {""} == {"real.txt"}
    assert copied == {"out/real.txt": b"ok"}
    assert summary == {"files": 1, "bytes": 2, "overflow": ""}


@pytest.mark.attack("files out")
def test_a_file_growing_while_it_is_read_is_bounded_and_refused(tmp_path):
    """Past the byte budget a file is never returned cut short, however long it grows."""
    (tmp_path / "job").mkdir()
    growing = tmp_path / "job" / "growing.log"
    growing.write_bytes(b"x" * (2 << 20))
    stop = threading.Event()

    def grow() -> None:
        with growing.open("ab") as log:
            for _ in range(1024):  # 64 MiB at most
                if stop.is_set():
                    return
                log.write(b"y" * (64 << 10))
                log.flush()

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        summary, copied = _collect(tmp_path, ["*.log"], max_bytes=1 << 20)
    finally:
        stop.set()
        writer.join()
    assert copied == {}
    assert summary == {"files": 0, "bytes": 0, "overflow": f"more than {1 << 20} bytes of files"}


@pytest.mark.attack("files out")
def test_names_that_are_not_utf8_match_no_pattern_and_others_come_back_as_they_are(tmp_path):
    """A File.path is text: the old walk returned b"bad\\xff.txt" as a lone surrogate,
    which the outcome's conversion to protobuf could not encode."""
    job = tmp_path / "job"
    job.mkdir()
    (job / os.fsdecode(b"bad\xff.txt")).write_text("b")
    (job / os.fsdecode(b"dir\xfe")).mkdir()
    (job / os.fsdecode(b"dir\xfe") / "in.txt").write_text("i")
    (job / "new\nline.txt").write_text("n")
    (job / ("l" * 251 + ".txt")).write_text("l")
    summary, copied = _collect(tmp_path, ["*", "**/*.txt"])
    assert copied == {"new\nline.txt": b"n", "l" * 251 + ".txt": b"l"}
    assert summary == {"files": 2, "bytes": 2, "overflow": ""}


def _nested(root: Path, names: list[str]) -> None:
    """Directories `names` one in another under `root` with a file at the bottom, made
    relative to each (their whole path may be past PATH_MAX)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        os.mkdir(name, dir_fd=fd)
        below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
    os.close(os.open("f.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)


@pytest.mark.parametrize(
    ("names", "overflow"),
    [
        (["d"] * 40, f"a path deeper than {files_out.MAX_DEPTH} directories under /job"),
        (["d" * 250] * 20, f"a path longer than {files_out.MAX_PATH_BYTES} bytes under /job"),
    ],
    ids=["deep", "long"],
)
@pytest.mark.attack("files out")
def test_a_path_past_the_walks_bounds_is_an_overflow_not_an_error(tmp_path, names, overflow):
    """The old walk skipped the deep file without a word, and failed on the long path
    (ENAMETOOLONG for its copy in the workspace)."""
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "a.txt").write_text("t")  # before "d...": taken before the bound
    _nested(tmp_path / "job", names)
    summary, copied = _collect(tmp_path, ["**/*.txt"])
    assert copied == {"a.txt": b"t"}
    assert summary == {"files": 1, "bytes": 1, "overflow": overflow}


@pytest.mark.attack("files out")
def test_patterns_of_any_shape_cost_a_bounded_walk(tmp_path, monkeypatch):
    """A run of `**` is one (the old matcher recursed once per component: RecursionError);
    a pattern deeper than the walk goes is dropped; past the comparisons' bound, an overflow."""
    job = tmp_path / "job"
    job.mkdir()
    (job / "x").write_text("x")
    for i in range(50):
        (job / f"a{i}").write_text("a")
    summary, copied = _collect(tmp_path, ["/".join(["**"] * 2000 + ["x"]), "a/" * 100 + "x"])
    assert (summary["overflow"], copied) == ("", {"x": b"x"})
    monkeypatch.setattr(files_out, "MAX_MATCH_STEPS", 40)
    summary, _ = _collect(tmp_path, ["**/a*"], workspace_name="again")
    assert summary["overflow"] == "the patterns took more than 40 comparisons"


@pytest.mark.attack("files out")
def test_entries_are_listed_only_where_a_pattern_could_match_and_only_so_many(
    tmp_path, monkeypatch
):
    """A directory no pattern reaches is never listed; one that is holds the walk to
    `MAX_ENTRIES` names (the old walk counted a directory no pattern reaches too). The
    real 100,000 run in a sandbox below."""
    monkeypatch.setattr(files_out, "MAX_ENTRIES", 1000)
    job = tmp_path / "job"
    (job / "tmp").mkdir(parents=True)
    for i in range(1001):
        (job / "tmp" / str(i)).touch()
    (job / "report.json").write_text("{}")
    summary, copied = _collect(tmp_path, ["report.json"])
    assert (summary, copied) == ({"files": 1, "bytes": 2, "overflow": ""}, {"report.json": b"{}"})
    summary, copied = _collect(tmp_path, ["tmp/*.json"], workspace_name="again")
    assert summary == {"files": 0, "bytes": 0, "overflow": "more than 1000 entries under /job"}


# The same attacks through a real sandbox, on each backend (the conformance cases in
# attacks_files_out.toml run them warm and cold, through a server)

HOSTILE_JOB = r"""
import os
import socket
import sys

def main():
    os.makedirs("out")
    with open("out/real.txt", "w") as f:
        f.write("ok")
    os.link("out/real.txt", "out/hard.txt")
    for target, link in [("/etc/passwd", "passwd.txt"), ("/proc/self/environ", "environ.txt"),
                         ("/proc/1/root", "root"), ("/", "slash"), ("/proc/self/cwd", "cwd")]:
        os.symlink(target, "out/" + link)
    tried = []
    for attempt in (lambda: os.link(os.path.realpath(sys.executable), "out/python.txt"),
                    lambda: os.mknod("out/zero.txt", 0o666 | 0o020000, os.makedev(1, 5))):
        try:
            attempt()
            tried.append("made")
        except OSError as refused:
            tried.append(refused.errno)
    os.mkfifo("out/fifo.txt")
    socket.socket(socket.AF_UNIX).bind("out/socket.txt")
    with open(b"out/bad\xff.txt", "w") as f:
        f.write("b")
    with open("out/new\nline.txt", "w") as f:
        f.write("n")
    with open("out/" + "l" * 251 + ".txt", "w") as f:
        f.write("l")
    return tried
"""

HOSTILE_FILES = {
    "out/hard.txt": b"ok",
    "out/real.txt": b"ok",
    "out/new\nline.txt": b"n",
    "out/" + "l" * 251 + ".txt": b"l",
}


@pytest.mark.attack("files out")
async def test_a_hostile_job_directory_gives_back_only_its_own_regular_text_named_files(
    executor: Executor,
) -> None:
    outcome = await _run(executor, HOSTILE_JOB, ("out/**",))
    assert outcome.verdict is Verdict.SUCCESS, outcome.detail
    assert json.loads(outcome.result_json) == [errno.EXDEV, errno.EPERM]  # neither made
    assert {f.path: f.content for f in outcome.files} == HOSTILE_FILES


@pytest.mark.attack("files out")
async def test_a_warm_sandbox_gives_back_the_same_and_no_more(pooled: Executor) -> None:  # noqa: F811
    """A warm sandbox learns of the request at its hand-over: the same walk, the same files."""
    outcome = await warm_run(pooled, "python", HOSTILE_JOB, output_files=("out/**",))
    assert (outcome.verdict, outcome.warm_sandbox) == (Verdict.SUCCESS, True), outcome.detail
    assert {f.path: f.content for f in outcome.files} == HOSTILE_FILES


@pytest.mark.attack("files out")
async def test_100000_empty_files_are_a_clear_verdict_and_the_service_keeps_serving(
    executor: Executor,
) -> None:
    many = f"""
import os

def main():
    os.mkdir("tmp")
    for i in range({files_out.MAX_ENTRIES + 1}):
        os.close(os.open(f"tmp/{{i}}", os.O_CREAT | os.O_WRONLY))
    with open("report.json", "w") as f:
        f.write("{{}}")
"""
    limits = {"wall_time_ms": 120_000, "cpu_time_ms": 120_000, "memory_bytes": 1 << 30}
    outcome = await _run(executor, many, ("report.json", "tmp/*.json"), **limits)
    assert outcome.verdict is Verdict.OUTPUT_LIMIT
    assert f"more than {files_out.MAX_ENTRIES} entries under /job" in outcome.detail
    assert [(f.path, f.content) for f in outcome.files] == [("report.json", b"{}")]
    after = await _run(executor, "def main():\n    open('x', 'w').write('x')\n", ("x",))
    assert (after.verdict, after.files) == (Verdict.SUCCESS, (JobFile("x", b"x"),))


@pytest.mark.attack("files out")
async def test_patterns_of_any_shape_give_a_typed_outcome(executor: Executor) -> None:
    """2,000 `**` components raised RecursionError in the service's walk."""
    patterns = ("/".join(["**"] * 2000 + ["x"]), "*/" * 2000 + "x")
    outcome = await _run(executor, "def main():\n    open('x', 'w').write('x')\n", patterns)
    assert (outcome.verdict, outcome.files) == (Verdict.SUCCESS, (JobFile("x", b"x"),))


async def _run(executor: Executor, code: str, patterns: tuple[str, ...], **limits: Any) -> Outcome:
    job = Job(
        id="files-out",
        language="python",
        code=code,
        entry_point="main",
        args={},
        limits=dataclasses.replace(LIMITS, **limits),
        output_files=patterns,
    )
    return await executor.run(job)
