"""Builds a jail from inside: namespaces, mounts, rlimits and seccomp, applied in the child.

This is the `process` backend's rendering of a `SandboxProfile`. It runs only in
processes forked by the single-threaded fork server (`forkserver.py`), never in
the threaded gRPC server, because what a child may safely do between fork and
exec in a threaded process is almost nothing.

The process tree of one job:

    fork server (root)
    └── supervisor   forked, a subreaper; once the jail is built it execs the compiled
        │            supervisor (`nsjail_supervisor.c`), which init is then the child of
        └── builder  joins the job's cgroup, becomes uid 65534, unshares the
            │        user/mount/pid/ipc/uts/cgroup(/net) namespaces, builds the root,
            │        forks init and exits
            └── init     pid 1 of the job: mounts /proc, pivots into the root, reaps;
                │        when the program ends, init exits and the kernel kills the rest
                └── program   rlimits, no_new_privs, seccomp, then exec of the runtime
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import resource
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gristmill.isolation import linux
from gristmill.isolation.linux import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    mount,
    prctl,
    set_seccomp_filter,
    unshare,
)

if TYPE_CHECKING:
    # Only for annotations: this module runs in the fork server, where every import
    # is copied into each job's processes (see `forkserver.py`).
    from gristmill.isolation.profile import SandboxProfile

# statvfs flags that a bind remount inside a user namespace must keep ("locked").
_LOCKED_FLAGS = {
    os.ST_NOSUID: MS_NOSUID,
    os.ST_NODEV: MS_NODEV,
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}

OOM_FIRST = 1000

JOB_FDS = ("stdin", "stdout", "stderr", "result", "job")
"""The program's descriptors 0 to 4, in that order: each a pipe to or from the service."""


@dataclass(frozen=True)
class JailSpec:
    """Everything the fork server's children need, flat and JSON-able."""

    argv: list[str]
    env: dict[str, str]
    job_dir: str
    root_dir: str
    jail_job_dir: str
    uid: int
    gid: int
    hostname: str
    tmpfs_bytes: int
    job_dir_bytes: int
    file_size_bytes: int
    mounts: list[dict[str, object]]
    symlinks: list[dict[str, str]]
    devices: list[str]
    rlimits: dict[str, int]
    seccomp_deny: list[str]
    # The same policy compiled to BPF by the service (`seccomp.compile_bpf`), as hex;
    # what the process backend's program installs. nsjail compiles its own from Kafel.
    seccomp_bpf: str
    network: bool
    wall_time_ms: int
    cpu_time_ms: int
    # RLIMIT_AS and RLIMIT_NPROC, only when no cgroup limits the job: the cgroup's
    # own refusal is what tells PROCESS_LIMIT apart, and RLIMIT_AS breaks the JVM.
    address_space_bytes: int
    nproc_limit: int
    # Files the supervisor writes "0" into to join the job's cgroup (`JobCgroup.join_files`).
    cgroup_join_files: list[str]
    cpu_usage_file: str
    cpu_usage_v2: bool
    shm_bytes: int = 0
    # The cgroup's pids.events: the supervisor stops a job that stays stuck at the limit.
    pids_events_file: str = ""
    # The memory group's usage, limit and memory.stat (`JobCgroup.memory_files`): the
    # supervisor stops a job that thrashes at its memory limit (`nsjail_supervisor.c`).
    memory_files: list[str] = field(default_factory=list)
    # What the process backend's supervisor joins (`JobCgroup.supervisor_join_files`).
    supervisor_cgroup_files: list[str] = field(default_factory=list)
    # What the job's network helper joins (`JobCgroup.helper_join_files`), and what its
    # sockets hold (`JobCgroup.socket_memory_file`; empty: in memory.stat), which the
    # supervisor judges with its memory (`sockets_fill_memory`). Network-on jobs only.
    helper_cgroup_files: list[str] = field(default_factory=list)
    socket_memory_file: str = ""
    masked_paths: list[str] = field(default_factory=list)
    seccomp_nosys: list[str] = field(default_factory=list)
    # How the jail is built: empty for our own namespaces (`build_root`), else the
    # nsjail command line (`nsjail.render_argv`) the supervisor's pid 1 execs.
    nsjail_argv: list[str] = field(default_factory=list)
    # The program that becomes the job's pid 1 and then nsjail (`nsjail.init_argv`).
    nsjail_init: str = ""
    # The compiled supervisor of every job (`supervisor.py`, `nsjail_supervisor.c`).
    supervisor: str = ""
    # A network-on jail's egress policy, an nftables ruleset (`egress.py`) loaded into
    # the network namespace of its own that the supervisor makes for it (`netns.py`).
    egress_ruleset: str = ""
    # Bytes sent and received past which the supervisor stops the job (0: no cap).
    network_bytes: int = 0
    # Flows (TCP connections, UDP destinations) past which new ones are refused (0: no
    # cap); the network helper's descriptors are bounded by it (`netns.enter`).
    network_connections: int = 0
    # Started ahead of demand (a warm sandbox): the program runs, waiting on fd 4, but
    # the job's clocks, files and limits come with the hand-over (`forkserver`), and
    # `wall_time_ms`/`cpu_time_ms` above are only the pool's backstops until then.
    warm: bool = False
    # The command of the template whose child becomes the program instead of an exec of
    # `argv` (`template.py`, `pool.fork_interpreters`); empty: the program is exec'd.
    fork_template: list[str] = field(default_factory=list)

    @classmethod
    def from_profile(cls, profile: SandboxProfile, **fields: object) -> JailSpec:
        return cls(
            uid=profile.uid,
            gid=profile.gid,
            hostname=profile.hostname,
            tmpfs_bytes=profile.tmpfs_bytes,
            job_dir_bytes=profile.job_dir_bytes,
            file_size_bytes=profile.file_size_bytes,
            # vars(), not asdict(): their fields are plain values, and asdict's deep
            # copies were a tenth of the service's CPU per job.
            mounts=[dict(vars(m)) for m in profile.mounts],
            symlinks=[dict(vars(s)) for s in profile.symlinks],
            devices=list(profile.devices),
            rlimits=dict(vars(profile.rlimits)),
            seccomp_deny=list(profile.seccomp.deny),
            seccomp_nosys=list(profile.seccomp.nosys),
            shm_bytes=profile.shm_bytes,
            masked_paths=list(profile.masked_paths),
            **fields,  # type: ignore[arg-type]
        )

    def to_json(self) -> bytes:
        return json.dumps(vars(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JailSpec:
        return cls(**json.loads(data))


def write_file(path: str, text: str) -> None:
    """Writes `text` to an existing file (a /proc or cgroup file) in one write."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mount_point(target: str, *, directory: bool) -> None:
    """Creates `target` (and its parents) to mount on: a directory, or an empty file."""
    if directory:
        Path(target).mkdir(parents=True, exist_ok=True)
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).touch(exist_ok=True)


def _bind(source: str, target: str, *, writable: bool) -> None:
    """Bind-mounts `source` at `target`, read-only unless `writable`."""
    _mount_point(target, directory=Path(source).is_dir())
    mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID
    if not writable:
        flags |= MS_RDONLY
    vfs = os.statvfs(target).f_flag
    for st_flag, ms_flag in _LOCKED_FLAGS.items():
        if vfs & st_flag:
            flags |= ms_flag
    mount(None, target, None, flags)


def join_cgroup(spec: JailSpec) -> None:
    """Moves the calling process (and so all it will start) into the job's cgroup.

    The caller must be single-threaded: "0" in a v1 `tasks` file moves the calling
    thread only (see `JobCgroup.join_files`).
    """
    for name in spec.cgroup_join_files:
        write_file(name, "0")


def _copy_tree(source: str, target: str, uid: int, gid: int) -> None:
    """Copies the job's regular files and directories; anything else is not the job's."""
    owned = os.geteuid() == 0
    for where, dirs, files in os.walk(source):
        into = Path(target) / Path(where).relative_to(source)
        for name in dirs:
            (into / name).mkdir(0o755)
        for name in files:
            fd = os.open(Path(where) / name, os.O_RDONLY | os.O_NOFOLLOW)
            mode = os.fstat(fd).st_mode & 0o755
            out = os.open(into / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            while os.sendfile(out, fd, None, 1 << 20):
                pass
            os.close(fd)
            os.close(out)
        if owned:
            for name in (*dirs, *files):
                os.chown(into / name, uid, gid)
    if owned:
        os.chown(target, uid, gid)


def fill_job_dir(spec: JailSpec, target: str) -> None:
    """Mounts the job directory as a tmpfs of `job_dir_bytes` at `target`, with the job's files.

    A bind mount of the host directory would let a job fill the host's disk
    (RLIMIT_FSIZE caps one file, not their sum); a tmpfs has a size, and its pages
    are charged to the job's cgroup because this process is already in it. A warm
    sandbox's tmpfs stays empty until its hand-over copies the files (`copy_job_files`).
    """
    Path(target).mkdir(parents=True, exist_ok=True)
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, job_dir_options(spec))
    if not spec.warm:
        copy_job_files(spec, target)


def job_dir_options(spec: JailSpec) -> str:
    """The mount options of the job's tmpfs: its size, and the jail's user as its owner."""
    return f"size={spec.job_dir_bytes},mode=0755,uid={spec.uid},gid={spec.gid}"


def copy_job_files(spec: JailSpec, target: str) -> None:
    """The job's files from its host directory into its mounted tmpfs at `target`, created
    as the jail's user (`linux.file_system_ids`: a warm sandbox's tmpfs may belong to its
    user namespace)."""
    with linux.file_system_ids(spec.uid, spec.gid):
        _copy_tree(spec.job_dir, target, spec.uid, spec.gid)


def enter_namespaces(spec: JailSpec) -> None:
    """Drops to the jail's uid on the host, then unshares every namespace as that user.

    Being unprivileged on the host first means the jail's uid maps to the same
    unprivileged host uid, never to root; the new user namespace still grants
    the capabilities needed to build the mounts.
    """
    join_cgroup(spec)
    os.setgroups([])
    os.setresgid(spec.gid, spec.gid, spec.gid)
    os.setresuid(spec.uid, spec.uid, spec.uid)
    # Changing uid made us non-dumpable, which would make our own uid_map root's.
    prctl(PR_SET_DUMPABLE, 1)
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    flags |= CLONE_NEWCGROUP
    if not spec.network:
        flags |= CLONE_NEWNET
    unshare(flags)
    write_file("/proc/self/setgroups", "deny")
    write_file("/proc/self/uid_map", f"{spec.uid} {spec.uid} 1")
    write_file("/proc/self/gid_map", f"{spec.gid} {spec.gid} 1")


def build_root(spec: JailSpec) -> None:
    """Builds the jail's root file system on a small tmpfs at `spec.root_dir`."""
    root = spec.root_dir
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for m in spec.mounts:  # `profile.BindMount`s, as dicts
        source = str(m["source"])
        if not Path(source).exists():
            if m.get("optional"):
                continue
            raise FileNotFoundError(errno.ENOENT, f"mount source {source} is missing")
        _bind(source, root + str(m["target"]), writable=bool(m.get("writable")))
    for device in spec.devices:
        target = root + device
        _mount_point(target, directory=False)
        mount(device, target, None, MS_BIND)
    for link in spec.symlinks:
        Path(root + link["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(root + link["path"]).symlink_to(link["target"])
    fill_job_dir(spec, root + spec.jail_job_dir)
    tmp = root + "/tmp"
    Path(tmp).mkdir(exist_ok=True)
    mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec.tmpfs_bytes},mode=1777")
    if spec.shm_bytes:
        # The job's own /dev/shm, never the host's: sized, and charged to its memory.
        shm = root + "/dev/shm"
        Path(shm).mkdir(parents=True, exist_ok=True)
        mount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec.shm_bytes},mode=1777")
    Path(root + "/proc").mkdir(exist_ok=True)


PROC_OPTIONS = "hidepid=2"
"""How every job's /proc is mounted: a process the job could not ptrace is invisible, so
the job sees its own processes only, never its init, supervisor or nsjail (whose
`net/*` and `mountinfo` would be the host's, and whose `cmdline` names the service)."""


def mask_proc(proc: str, masked: list[str]) -> None:
    """Covers each of `masked` ("/proc/..." paths) in the /proc mounted at `proc`.

    A file goes under /dev/null, a directory under an empty read-only tmpfs;
    an entry this kernel does not have is skipped.
    """
    for path in masked:
        target = proc + path.removeprefix("/proc")
        try:
            is_dir = Path(target).is_dir()
            if not is_dir and not Path(target).exists():
                continue
            if is_dir:
                flags = MS_RDONLY | MS_NOSUID | MS_NODEV
                mount("tmpfs", target, "tmpfs", flags, "size=4k,mode=0555")
            else:
                mount("/dev/null", target, None, MS_BIND)
        except FileNotFoundError:
            continue


def enter_root(spec: JailSpec) -> None:
    """In the new pid namespace: mounts its /proc, pivots into the root, seals it read-only.

    A mount namespace of its own first, because pivot_root moves the root of every
    process of the namespace, and the supervisor must stay outside.
    """
    root = spec.root_dir
    unshare(CLONE_NEWNS)
    # Read-only, as nsjail's: a job must not lower its processes' oom_score_adj (the
    # kernel's own floor needs CAP_SYS_RESOURCE, which the service may lack).
    proc_flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    mount("proc", root + "/proc", "proc", proc_flags, PROC_OPTIONS)
    mask_proc(root + "/proc", spec.masked_paths)
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root under the new one; detaching it drops it.
    linux.pivot_root(".", ".")
    linux.umount2(".", MNT_DETACH)
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    socket.sethostname(spec.hostname)


def _set_rlimits(spec: JailSpec) -> None:
    limits = {
        resource.RLIMIT_NOFILE: spec.rlimits["nofile"],
        resource.RLIMIT_STACK: spec.rlimits["stack"],
        resource.RLIMIT_CORE: spec.rlimits["core"],
        resource.RLIMIT_MEMLOCK: spec.rlimits["memlock"],
        resource.RLIMIT_FSIZE: spec.file_size_bytes,
        resource.RLIMIT_SIGPENDING: spec.rlimits["sigpending"],
        resource.RLIMIT_MSGQUEUE: spec.rlimits["msgqueue"],
    }
    if spec.nproc_limit:
        # Counted per user namespace, so this is the job's own process count.
        limits[resource.RLIMIT_NPROC] = spec.nproc_limit
    for which, value in limits.items():
        resource.setrlimit(which, (value, value))
    if spec.cpu_time_ms:
        # A backstop: the supervisor stops the whole tree on the cgroup's count first.
        seconds = math.ceil(spec.cpu_time_ms / 1000) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    if spec.address_space_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (spec.address_space_bytes,) * 2)


def place_fds(wanted: list[int], keep: int = -1) -> int:
    """Puts `wanted` at 0, 1, 2, ... and closes every other descriptor but `keep`.

    Returns `keep`'s new number (close-on-exec), or -1 when there is none.
    """
    sources = [*wanted, keep] if keep >= 0 else wanted
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in sources]
    for target, fd in enumerate(high[: len(wanted)]):
        os.dup2(fd, target)
    kept = high[-1] if keep >= 0 else 65536
    os.closerange(len(wanted), kept)
    os.closerange(kept + 1, 65536)
    return kept if keep >= 0 else -1


def rusage_ns(usage: resource.struct_rusage) -> dict[str, int]:
    """A reaped process's CPU time and peak memory, for when no cgroup counts them."""
    return {
        "user_cpu_ns": int(usage.ru_utime * 1e9),
        "system_cpu_ns": int(usage.ru_stime * 1e9),
        "peak_memory_bytes": usage.ru_maxrss * 1024,
    }


def prepare_program(spec: JailSpec, fds: dict[str, int], error_pipe: int, *, forked: bool) -> int:
    """What the job's program is given before it runs: its session, directory, signals,
    rlimits, descriptors 0 to 4 only, no new privileges and the seccomp filter, last.

    `forked`: the program is a template's child (`template.py`), which runs without an
    exec: its signals are the interpreter's own (`signals` there), and its capabilities
    in its user namespace are dropped here, as an exec would have dropped them. Returns
    `error_pipe`'s new number.
    """
    os.setsid()
    os.chdir(spec.jail_job_dir)
    if not forked:
        linux.default_signals()
    _set_rlimits(spec)
    # Our /proc files are the init's undumpable ones until we are dumpable again.
    # (The OOM killer's preference, OOM_FIRST, was set by the builder: /proc is read-only.)
    prctl(PR_SET_DUMPABLE, 1)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    error_pipe = place_fds([fds[name] for name in JOB_FDS], error_pipe)
    if forked:
        linux.drop_capabilities()
    if not spec.seccomp_bpf:
        raise ValueError("no seccomp filter in the spec")  # never run a job without one
    set_seccomp_filter(bytes.fromhex(spec.seccomp_bpf))
    return error_pipe


def exec_program(spec: JailSpec, fds: dict[str, int], error_pipe: int) -> None:
    """Becomes the job's program. Never returns: execs, or reports why not and exits 127."""
    try:
        error_pipe = prepare_program(spec, fds, error_pipe, forked=False)
        os.execve(spec.argv[0], spec.argv, spec.env)
    except BaseException as error:
        os.write(error_pipe, f"cannot start {spec.argv[0]}: {error}".encode())
    finally:
        os._exit(127)
