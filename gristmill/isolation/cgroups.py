"""Per-job control groups: the kernel's limits and accounting for a whole process tree.

Two hierarchies exist in the wild: cgroup v1 (one mount per controller, as on
these machines) and cgroup v2 (one unified tree, as on most current hosts). Which
one is usable is detected once at start-up; both give the same `JobCgroup`.
Verdicts come from what the kernel counted here (an OOM kill, the pids limit
refusing a fork), never from guessing at exit code 137.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup")
GROUP_NAME = "gristmill"
# Numbers the hierarchies detected in this process: each server (there may be several
# in one process, e.g. in tests) owns its own parent group and removes only that.
_DETECTIONS = itertools.count()


class Version(enum.Enum):
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class CgroupStats:
    oom_kills: int
    pids_refused: int
    peak_memory_bytes: int
    user_cpu_ns: int
    system_cpu_ns: int
    # The most processes alive at once, where the kernel keeps count (pids.peak).
    peak_processes: int


def _read(path: Path) -> bytes:
    """A control file's content, through a plain descriptor rather than pathlib's
    buffered text file: a job reads and writes ~30 of these files on the service's event
    loop, 15-18 us each through `Path.read_text`/`write_text`, 7-9 through `os`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:  # a long list of pids takes more than one read
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_int(path: Path) -> int:
    try:
        return int(_read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _read_keyed(path: Path, key: str) -> int:
    """A value of a flat keyed file ("oom_kill 3" in memory.events); 0 if none or bad."""
    try:
        for line in _read(path).decode().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return max(int(value), 0)
    except (OSError, ValueError):
        pass
    return 0


def _write(path: Path, value: str) -> None:
    """Writes a control file, opened as `Path.write_text` would (see `_read`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


_TCP_USAGE = "memory.kmem.tcp.usage_in_bytes"
_TCP_MAX_USAGE = "memory.kmem.tcp.max_usage_in_bytes"


def _limit_sockets(memory: Path, memory_bytes: int) -> None:
    """v1: the group's socket buffers (TCP and UDP alike, despite the name) limited to its
    memory limit. Until a limit is set v1 charges them to nobody: a job's 100 unread
    loopback connections held 395 MB of a 64 MiB job. The supervisor judges them with
    the job's memory (`sockets_fill_memory`). A kernel without the file charges nothing."""
    with contextlib.suppress(FileNotFoundError):
        _write(memory / "memory.kmem.tcp.limit_in_bytes", str(memory_bytes))


@dataclass(frozen=True)
class JobCgroup:
    """The cgroup(s) of one job: v1 has one directory per controller, v2 just one."""

    version: Version
    # Controller name -> the job's directory (v2: the one directory under "").
    dirs: dict[str, Path]

    @property
    def procs_files(self) -> tuple[Path, ...]:
        """The files that list the group's processes (and take a pid to move one in)."""
        return tuple(d / "cgroup.procs" for d in self.dirs.values())

    @property
    def join_files(self) -> tuple[Path, ...]:
        """The files a single-threaded process writes "0" into to move itself into the group.

        v1: `tasks`. Moving a whole thread group (a pid written to `cgroup.procs`)
        takes the kernel's global threadgroup lock for writing, which waits for an
        RCU grace period: ~10 ms per job here. Moving only the calling thread skips
        that lock (Linux >= 6.0), and the supervisor that writes is single-threaded,
        so its thread is the whole process. v2 offers `tasks` only in threaded
        subtrees, so there it is `cgroup.procs`.
        """
        name = "cgroup.procs" if self.version is Version.V2 else "tasks"
        return tuple(d / name for d in self.dirs.values())

    @property
    def supervisor_join_files(self) -> tuple[Path, ...]:
        """What the process backend's supervisor joins: every controller but memory (v1),
        so that a job filling its memory cannot get it OOM-killed; counted in the pids group
        (the profile's `overhead_processes`). v2 has one group for all: it joins the whole."""
        if self.version is Version.V2:
            return self.join_files
        return tuple(d / "tasks" for name, d in self.dirs.items() if name != "memory")

    def _dir(self, controller: str) -> Path:
        return self.dirs[""] if self.version is Version.V2 else self.dirs[controller]

    @property
    def cpu_usage_file(self) -> Path:
        """Cumulative CPU time of the whole tree, polled by the supervisor."""
        if self.version is Version.V2:
            return self.dirs[""] / "cpu.stat"
        return self._dir("cpuacct") / "cpuacct.usage"

    @property
    def pids_events_file(self) -> Path:
        """Counts the forks the pids limit refused (its "max" line)."""
        return self._dir("pids") / "pids.events"

    def cpu_ns(self) -> int:
        if self.version is Version.V2:
            return _read_keyed(self.cpu_usage_file, "usage_usec") * 1000
        return _read_int(self.cpu_usage_file)

    @property
    def memory_files(self) -> tuple[Path, Path, Path]:
        """The group's memory usage, its limit and its memory.stat: what the supervisor
        watches for a job thrashing at its limit (`nsjail_supervisor.c`)."""
        if self.version is Version.V2:
            d = self.dirs[""]
            return d / "memory.current", d / "memory.max", d / "memory.stat"
        memory = self._dir("memory")
        return (
            memory / "memory.usage_in_bytes",
            memory / "memory.limit_in_bytes",
            memory / "memory.stat",
        )

    @property
    def socket_memory_file(self) -> Path | None:
        """v1: what the group's sockets hold (TCP and UDP buffers), charged apart from its
        memory and only once their limit is set (`create`); v2 counts them in its memory
        and says how much in memory.stat ("sock"): None."""
        if self.version is Version.V2:
            return None
        return self._dir("memory") / _TCP_USAGE

    @property
    def helper_join_files(self) -> tuple[Path, ...]:
        """What a job's network helper (slirp4netns) joins: every controller but pids
        (v1), so that its CPU and memory are the job's while its process is not counted
        against the job's processes. v2 has one group for all: there it joins the whole."""
        if self.version is Version.V2:
            return self.join_files
        return tuple(d / "tasks" for name, d in self.dirs.items() if name != "pids")

    def memory_bytes(self) -> int:
        """The memory the group holds now (a warm sandbox's, for the pool's budget)."""
        return _read_int(self.memory_files[0])

    def busy(self) -> bool:
        """Whether a thread of the group runs or waits to (state R), or waits on the disk
        (D): a program still starting, unlike one blocked reading its job message (S)."""
        threads = "cgroup.threads" if self.version is Version.V2 else "tasks"
        try:
            tids = _read(self._dir("pids") / threads).split()
        except OSError:
            return False
        for tid in tids:
            try:
                state = _read(Path(f"/proc/{tid.decode()}/stat")).rpartition(b")")[2][1:2]
            except OSError:
                continue  # gone since
            if state in (b"R", b"D"):
                return True
        return False

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read(procs).split())
        return sorted(found)

    def stats(self) -> CgroupStats:
        """The group's accounting; user and system CPU are scaled to sum to `cpu_ns()`.

        The kernel splits CPU time into user and system by sampling ticks, so their sum
        can fall short of the exact total that the CPU limit is judged by: a job stopped
        for CPU_LIMIT must never report less CPU than its limit.
        """
        if self.version is Version.V2:
            d = self.dirs[""]
            user_ns = _read_keyed(d / "cpu.stat", "user_usec") * 1000
            system_ns = _read_keyed(d / "cpu.stat", "system_usec") * 1000
            oom_kills = _read_keyed(d / "memory.events", "oom_kill")
            pids_refused = _read_keyed(d / "pids.events", "max")
            peak_memory = _read_int(d / "memory.peak")
            peak_processes = _read_int(d / "pids.peak")
        else:
            memory, pids, cpu = self._dir("memory"), self._dir("pids"), self._dir("cpuacct")
            user_ns = _read_int(cpu / "cpuacct.usage_user")
            system_ns = _read_int(cpu / "cpuacct.usage_sys")
            oom_kills = _read_keyed(memory / "memory.oom_control", "oom_kill")
            pids_refused = _read_keyed(pids / "pids.events", "max")
            # v1 charges socket buffers apart: the peak of both (at most their sum's).
            peak_memory = _read_int(memory / "memory.max_usage_in_bytes") + _read_int(
                memory / _TCP_MAX_USAGE
            )
            peak_processes = _read_int(pids / "pids.peak")
        user_ns, system_ns = _split_exactly(self.cpu_ns(), user_ns, system_ns)
        return CgroupStats(
            oom_kills=oom_kills,
            pids_refused=pids_refused,
            peak_memory_bytes=peak_memory,
            user_cpu_ns=user_ns,
            system_cpu_ns=system_ns,
            peak_processes=peak_processes,
        )

    def set_cpu_quota(self, cpu_millicores: int) -> None:
        """The group's CPU bandwidth in thousandths of a core; 0 for none. v1 needs the cpu
        controller mounted beside cpuacct, else there is no quota to set."""
        if self.version is Version.V2:
            bandwidth = str(cpu_millicores * CPU_PERIOD_US // 1000) if cpu_millicores else "max"
            _write(self.dirs[""] / "cpu.max", f"{bandwidth} {CPU_PERIOD_US}")
            return
        cpu = self.dirs.get("cpu", self.dirs["cpuacct"])
        if (cpu / "cpu.cfs_quota_us").exists():
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            quota = cpu_millicores * CPU_PERIOD_US // 1000 if cpu_millicores else -1
            _write(cpu / "cpu.cfs_quota_us", str(quota))

    def set_cpu_weight(self, background: bool) -> None:
        """The group's share of a contended CPU: the least there is for a warm sandbox that
        starts beside running jobs (it takes only the CPU they leave), the default for a
        job. v1 needs the cpu controller; where it is missing the weight stays the default."""
        if self.version is Version.V2:
            _write(self.dirs[""] / "cpu.weight", "1" if background else "100")
            return
        cpu = self.dirs.get("cpu", self.dirs["cpuacct"])
        if (cpu / "cpu.shares").exists():
            _write(cpu / "cpu.shares", "2" if background else "1024")

    def hand_over(self, memory_bytes: int, processes: int, cpu_millicores: int) -> None:
        """A warm sandbox's group gets its job's limits and CPU weight and forgets what its
        wait used: the CPU time and peak memory reported (and the CPU limit judged) are
        the job's. Raises OSError when the group already holds more than the job may."""
        self.set_cpu_quota(cpu_millicores)
        self.set_cpu_weight(background=False)
        if self.version is Version.V2:
            d = self.dirs[""]
            _write(d / "memory.max", str(memory_bytes))
            _write(d / "pids.max", str(processes))
            # v2 has no counters to reset: its CPU total is read as a baseline instead.
            with contextlib.suppress(OSError):
                _write(d / "memory.peak", "0")  # resettable since Linux 6.12
            return
        memory = self._dir("memory")
        # memsw must stay at or above the limit: raised before it, lowered after it.
        for name in ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes"):
            with contextlib.suppress(OSError):
                _write(memory / name, str(memory_bytes))
        _write(memory / "memory.limit_in_bytes", str(memory_bytes))
        with contextlib.suppress(OSError):
            _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        _limit_sockets(memory, memory_bytes)
        _write(memory / "memory.max_usage_in_bytes", "0")
        with contextlib.suppress(FileNotFoundError):
            _write(memory / _TCP_MAX_USAGE, "0")
        _write(self._dir("pids") / "pids.max", str(processes))
        _write(self._dir("cpuacct") / "cpuacct.usage", "0")

    def kill_all(self) -> int:
        """SIGKILLs whatever is left in the group; how many processes that was."""
        killed = 0
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return killed
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(0.01)
        return killed

    def remove(self) -> None:
        """Removes the group once it is empty (the kernel refuses while it is not)."""
        for d in self.dirs.values():
            for _ in range(2000):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.001)


@dataclass(frozen=True)
class Cgroups:
    """A usable hierarchy, found by `detect`, that makes one group per job."""

    version: Version
    # v1: controller name -> our parent directory in its mount; v2: {"": parent}.
    parents: dict[str, Path]

    def create(
        self, memory_bytes: int, processes: int, cpu_millicores: int = 0, background: bool = False
    ) -> JobCgroup:
        """A job's group; `cpu_millicores` (thousandths of a core) is its CPU quota, 0 none;
        `background` gives it the least CPU weight (a warm sandbox, until its hand-over)."""
        name = f"job-{uuid.uuid4().hex}"
        dirs = {controller: parent / name for controller, parent in self.parents.items()}
        for d in dirs.values():
            d.mkdir()
        group = JobCgroup(self.version, dirs)
        if self.version is Version.V2:
            d = dirs[""]
            _write(d / "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(processes))
        else:
            memory = group._dir("memory")
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
            _limit_sockets(memory, memory_bytes)
            _write(group._dir("pids") / "pids.max", str(processes))
        if cpu_millicores:
            group.set_cpu_quota(cpu_millicores)
        if background:
            group.set_cpu_weight(background=True)
        return group

    def remove(self) -> None:
        """Removes this server's group; called when the server stops, its jobs gone."""
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                parent.rmdir()

    @property
    def cpu_quota(self) -> bool:
        """Whether jobs get a CPU quota here (v1 needs the cpu controller mounted)."""
        if self.version is Version.V2:
            return True
        cpu = self.parents.get("cpu", self.parents["cpuacct"])
        return (cpu / "cpu.cfs_quota_us").exists()

    def describe(self) -> str:
        where = ", ".join(str(p) for p in self.parents.values())
        return f"cgroup {self.version.value} (memory, pids, cpu) under {where}"


class CgroupsUnavailable(Exception):
    """No hierarchy with the memory, pids and cpu controllers can be used here."""


def _split_exactly(total_ns: int, user_ns: int, system_ns: int) -> tuple[int, int]:
    """`total_ns` split between user and system in the sampled proportion."""
    sampled = user_ns + system_ns
    if sampled <= 0:
        return total_ns, 0
    user = total_ns * user_ns // sampled
    return user, total_ns - user


_V1_CONTROLLERS = ("memory", "pids", "cpuacct")
# The CPU quota's controller; without it (or mounted with cpuacct) jobs get no quota.
_V1_OPTIONAL = ("cpu",)
CPU_PERIOD_US = 100_000
_V2_CONTROLLERS = ("memory", "pids", "cpu")


def _mounts() -> list[tuple[str, str, set[str]]]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mountpoint, fstype, options, *_ = line.split()
        found.append((fstype, mountpoint, set(options.split(","))))
    return found


def _server_group(base: Path, name: str) -> Path:
    """This server's own group `name` under `base`, after clearing those of dead servers.

    Each server keeps its jobs under `server-<pid>-<n>`, so that several can share a
    machine (or a process) and a restarted one can remove what a killed one left.
    """
    for stale in base.glob("server-*"):
        pid = int(stale.name.removeprefix("server-").partition("-")[0])
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            for job in stale.glob("job-*"):
                JobCgroup(Version.V1, {"": job}).kill_all()
                with contextlib.suppress(OSError):
                    job.rmdir()
            with contextlib.suppress(OSError):
                stale.rmdir()
    group = base / name
    group.mkdir(parents=True, exist_ok=True)
    return group


def _detect_v2(mountpoint: Path, name: str) -> Cgroups:
    available = set((mountpoint / "cgroup.controllers").read_text().split())
    missing = [c for c in _V2_CONTROLLERS if c not in available]
    if missing:
        raise CgroupsUnavailable(
            f"cgroup v2 at {mountpoint} lacks controllers {missing} (they are bound to v1)"
        )
    base = mountpoint / GROUP_NAME
    base.mkdir(exist_ok=True)
    enable = " ".join(f"+{c}" for c in _V2_CONTROLLERS)
    _write(mountpoint / "cgroup.subtree_control", enable)
    _write(base / "cgroup.subtree_control", enable)
    parent = _server_group(base, name)
    _write(parent / "cgroup.subtree_control", enable)
    return Cgroups(Version.V2, {"": parent})


def _detect_v1(mounts: list[tuple[str, str, set[str]]], name: str) -> Cgroups:
    parents: dict[str, Path] = {}
    for controller in (*_V1_CONTROLLERS, *_V1_OPTIONAL):
        mountpoint = next(
            (Path(m) for fs, m, opts in mounts if fs == "cgroup" and controller in opts), None
        )
        if mountpoint is not None and mountpoint in {p.parent.parent for p in parents.values()}:
            continue  # co-mounted with a controller already used (e.g. cpu,cpuacct)
        if mountpoint is None and controller in _V1_OPTIONAL:
            continue
        if mountpoint is None:
            raise CgroupsUnavailable(f"cgroup v1 has no {controller} hierarchy mounted")
        base = mountpoint / GROUP_NAME
        base.mkdir(exist_ok=True)
        if controller == "memory":
            with contextlib.suppress(OSError):
                _write(base / "memory.use_hierarchy", "1")
        parents[controller] = _server_group(base, name)
    return Cgroups(Version.V1, parents)


def detect(prefer: Version | None = None) -> Cgroups:
    """The usable hierarchy: v2 when it has the controllers, else v1; raises if neither.

    Creating our parent group needs root; an unprivileged service gets
    `CgroupsUnavailable` and falls back to rlimits.
    """
    mounts = _mounts()
    name = f"server-{os.getpid()}-{next(_DETECTIONS)}"
    reasons = []
    order = [Version.V2, Version.V1] if prefer is not Version.V1 else [Version.V1]
    if prefer is Version.V2:
        order = [Version.V2]
    for version in order:
        try:
            if version is Version.V2:
                v2 = next((Path(m) for fs, m, _ in mounts if fs == "cgroup2"), None)
                if v2 is None:
                    raise CgroupsUnavailable("no cgroup v2 hierarchy mounted")
                return _detect_v2(v2, name)
            return _detect_v1(mounts, name)
        except CgroupsUnavailable as error:
            reasons.append(str(error))
        except OSError as error:
            reasons.append(f"cgroup {version.value}: {error}")
    raise CgroupsUnavailable("; ".join(reasons))
