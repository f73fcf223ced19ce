"""The cgroup layer on both hierarchies: v2 against a fake tree of v2 file names (so its
reading, writing and removal run everywhere), and against the real kernel where a v2
hierarchy with the memory, pids and cpu controllers exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.isolation.cgroups import Cgroups, CgroupsUnavailable, JobCgroup, Version, detect


def test_v2_limits_are_written_to_the_v2_files(tmp_path: Path) -> None:
    group = Cgroups(Version.V2, {"": tmp_path}).create(64 << 20, 17)
    [job] = group.dirs.values()
    assert job.parent == tmp_path
    assert (job / "memory.max").read_text() == str(64 << 20)
    assert (job / "memory.swap.max").read_text() == "0"
    assert (job / "pids.max").read_text() == "17"
    assert group.procs_files == (job / "cgroup.procs",)
    assert group.cpu_usage_file == job / "cpu.stat"


def test_v2_stats_come_from_events_peak_and_cpu_stat(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (tmp_path / "pids.events").write_text("max 3\n")
    (tmp_path / "memory.peak").write_text("123456\n")
    (tmp_path / "pids.peak").write_text("9\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    group = JobCgroup(Version.V2, {"": tmp_path})
    stats = group.stats()
    assert (stats.oom_kills, stats.pids_refused, stats.peak_memory_bytes) == (1, 3, 123456)
    assert (stats.user_cpu_ns, stats.system_cpu_ns, stats.peak_processes) == (10**6, 5 * 10**5, 9)
    assert group.cpu_ns() == 1_500_000


def test_v2_kill_all_kills_what_is_listed_and_remove_deletes_the_group(tmp_path: Path) -> None:
    job = tmp_path / "job-1"
    job.mkdir()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (job / "cgroup.procs").write_text(f"{victim.pid}\n")
    group = JobCgroup(Version.V2, {"": job})
    assert group.pids() == [victim.pid]
    assert group.kill_all() >= 1
    assert victim.wait(timeout=5) == -9
    (job / "cgroup.procs").unlink()
    group.remove()
    assert not job.exists()


def test_a_group_of_many_processes_lists_them_all(tmp_path: Path) -> None:
    """The control files are read through plain descriptors: a list of pids longer than
    one read (20,000 of them, ~120 KB) is read whole, not cut at the first read's end."""
    (tmp_path / "cgroup.procs").write_text(
        "".join(f"{pid}\n" for pid in range(10**6, 10**6 + 20_000))
    )
    assert JobCgroup(Version.V2, {"": tmp_path}).pids() == list(range(10**6, 10**6 + 20_000))


def _real_v2() -> Cgroups | None:
    try:
        return detect(prefer=Version.V2)
    except CgroupsUnavailable:
        return None


@pytest.mark.skipif(
    _real_v2() is None,
    reason="no cgroup v2 hierarchy with memory, pids and cpu here (they are bound to v1)",
)
def test_real_v2_group_limits_and_counts_a_process() -> None:
    cgroups = _real_v2()
    assert cgroups is not None
    group = cgroups.create(32 << 20, 4)
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        group.procs_files[0].write_text(str(child.pid))
        assert group.pids() == [child.pid]
        group.kill_all()
        child.wait(timeout=5)
        assert group.stats().oom_kills == 0
    finally:
        group.remove()
        cgroups.remove()


def test_detect_explains_why_v2_is_not_used_when_it_is_not() -> None:
    try:
        found = detect()
    except CgroupsUnavailable as error:
        assert "cgroup" in str(error)
        return
    if found.version is Version.V1:
        with pytest.raises(CgroupsUnavailable, match="v2"):
            detect(prefer=Version.V2)


def test_a_process_joins_by_tasks_on_v1_and_by_cgroup_procs_on_v2(tmp_path: Path) -> None:
    v1 = JobCgroup(Version.V1, {"memory": tmp_path / "m", "pids": tmp_path / "p"})
    assert v1.join_files == (tmp_path / "m" / "tasks", tmp_path / "p" / "tasks")
    assert JobCgroup(Version.V2, {"": tmp_path}).join_files == (tmp_path / "cgroup.procs",)


def _real_v1() -> Cgroups | None:
    try:
        return detect(prefer=Version.V1)
    except CgroupsUnavailable:
        return None


_JOIN_AND_SAY_WHERE = """
import os, sys
for name in sys.argv[1:]:
    fd = os.open(name, os.O_WRONLY)
    os.write(fd, b"0")
    os.close(fd)
print(open("/proc/self/cgroup").read())
"""


@pytest.mark.skipif(_real_v1() is None, reason="no usable cgroup v1 hierarchies here")
def test_real_v1_join_by_writing_zero_moves_the_whole_single_threaded_process() -> None:
    cgroups = _real_v1()
    assert cgroups is not None
    group = cgroups.create(32 << 20, 4)
    try:
        files = [str(f) for f in group.join_files]
        where = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _JOIN_AND_SAY_WHERE, *files],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for controller, directory in group.dirs.items():
            line = next(x for x in where.splitlines() if controller in x.split(":")[1].split(","))
            assert line.endswith(directory.name), line
    finally:
        group.remove()
        cgroups.remove()


def test_v2_cpu_quota_is_written_as_cpu_max(tmp_path: Path) -> None:
    group = Cgroups(Version.V2, {"": tmp_path}).create(64 << 20, 17, cpu_millicores=1500)
    [job] = group.dirs.values()
    assert (job / "cpu.max").read_text() == "150000 100000"


@pytest.mark.skipif(_real_v1() is None, reason="no usable cgroup v1 hierarchies here")
def test_real_v1_cpu_quota_is_written_to_the_cpu_controller() -> None:
    cgroups = _real_v1()
    assert cgroups is not None
    group = cgroups.create(32 << 20, 4, cpu_millicores=500)
    try:
        cpu = group.dirs.get("cpu", group.dirs["cpuacct"])
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    finally:
        group.remove()
        cgroups.remove()
