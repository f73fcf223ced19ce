"""Starting the compiled supervisor of a job (`nsjail_supervisor.c`), the only one.

Every job of both backends is supervised by it: its limits, clocks and report. A job
under nsjail without network has it spawned by the fork server (vfork and exec: no
Python fork per job); any other job has it exec'd by the fork server's child once that
child has done what needs Python (`forkserver.py`): the network namespace, the process
backend's jail. What it is told comes from the spec, here, in one place.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gristmill.isolation import files_out
from gristmill.isolation.jail import JailSpec, job_dir_options

__all__ = ["SUPERVISOR", "SUPERVISOR_FDS", "argv", "exec_supervisor", "own_argv", "spawn"]

SUPERVISOR = "gristmill-nsjail-supervisor"
"""The compiled supervisor (`nsjail_supervisor.c`, built by `make install`)."""
SUPERVISOR_FDS = ("stdin", "stdout", "stderr", "result", "job", "control", "report")
"""The compiled supervisor's descriptors 0 to 6, in that order."""
JAIL_PIDFD, JAIL_STATUS_FD, JOB_DIR_FD = 7, 8, 9
"""Where an own jail's descriptors go: its pid 1's pidfd, init's status, the job's tmpfs."""
NETWORK_EXIT_FD = 10
"""Where a network-on job's helper's exit descriptor is held (it ends with the supervisor)."""


def _common(spec: JailSpec) -> list[str]:
    """What the supervisor is told of any job: its limits and its cgroup's files."""
    args = ["--wall-ms", str(spec.wall_time_ms), "--cpu-ms", str(spec.cpu_time_ms)]
    if spec.warm:
        args.append("--warm")
    if spec.cpu_usage_file:
        args += ["--cpu-usage", spec.cpu_usage_file, *(["--cpu-v2"] if spec.cpu_usage_v2 else [])]
    if spec.pids_events_file:
        args += ["--pids-events", spec.pids_events_file]
    if spec.cgroup_join_files:
        # The group's processes, each killed once the program has ended.
        args += ["--procs", spec.cgroup_join_files[0]]
    if spec.memory_files:
        usage, limit, stat = spec.memory_files
        args += ["--memory-usage", usage, "--memory-limit", limit, "--memory-stat", stat]
    if spec.network:
        args += ["--network", "--network-bytes", str(spec.network_bytes)]
        args += ["--sockets", "--socket-memory", spec.socket_memory_file]
    return [*args, "--request", str(Path(spec.job_dir).parent / files_out.REQUEST)]


def argv(spec: JailSpec, init_argv: list[str]) -> list[str]:
    """The supervisor's command line for nsjail's jail, whose pid 1 is `init_argv`."""
    args = [spec.supervisor, *_common(spec)]
    if not spec.warm:
        args += ["--copy-from", spec.job_dir]
    for name in spec.cgroup_join_files:
        args += ["--join", name]
    args += ["--root", spec.root_dir, "--tmpfs", job_dir_options(spec)]
    args += ["--uid", str(spec.uid), "--gid", str(spec.gid)]
    return [*args, "--", *init_argv]


def own_argv(spec: JailSpec, pid: int, child: bool, job_dir: bool, started_ns: int) -> list[str]:
    """The supervisor's command line for a jail already built (the process backend's),
    whose pid 1 is `pid` (our `child`, or a template's), with the job's tmpfs (`job_dir`)
    or without, its set-up begun at `started_ns`."""
    args = [spec.supervisor, *_common(spec), "--jail", str(pid), "--started-ns", str(started_ns)]
    return [*args, *(["--jail-child"] if child else []), *(["--job-dir"] if job_dir else [])]


def _placed(fds: list[int]) -> list[int]:
    """Copies of `fds` above them all (close-on-exec), so that none is overwritten before
    it is moved into place."""
    return [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) if fd >= 0 else -1 for fd in fds]


def spawn(spec: JailSpec, fds: dict[str, int], init_argv: list[str]) -> None:
    """Starts the supervisor of an nsjail job without network, its descriptors at 0 to 6.

    Spawned (vfork and exec), not forked: a fork of the fork server cost each job ~3 ms
    of CPU in pages copied on write."""
    high = _placed([fds[name] for name in SUPERVISOR_FDS])
    try:
        os.posix_spawn(
            spec.supervisor,
            argv(spec, init_argv),
            {},
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, number) for number, fd in enumerate(high)],
        )
    finally:
        for fd in high:
            os.close(fd)


def exec_supervisor(args: list[str], placed: dict[int, int]) -> None:
    """Becomes the supervisor (`args`), each descriptor of `placed` (number: ours, -1 for
    none) at its number. Never returns; raises OSError if the exec fails."""
    numbers = list(placed)
    high = _placed([placed[n] for n in numbers])
    for number, fd in zip(numbers, high, strict=True):
        if fd >= 0:
            os.dup2(fd, number)
    os.execve(args[0], args, {})
