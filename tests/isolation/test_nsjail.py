"""nsjail's rendering of a profile, flag by flag, each pitfall pinned by a test; then
the real nsjail running real jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from gristmill.isolation.backend import SandboxExit, SandboxPlan
from gristmill.isolation.cgroups import Cgroups, CgroupsUnavailable, detect
from gristmill.isolation.jail import JailSpec
from gristmill.isolation.jail_builders import NsjailArgv
from gristmill.isolation.nsjail import LOG_KEPT, SHIM, parse_log, render_argv
from gristmill.isolation.profile import BindMount, SandboxProfile, Symlink
from gristmill.isolation.seccomp import render_kafel, rules
from gristmill.isolation.select import find_nsjail, find_nsjail_init, find_nsjail_supervisor
from gristmill.isolation.supervised_backend import SupervisedBackend
from gristmill.model import Limits

MiB = 1 << 20


def spec(**fields: object) -> JailSpec:
    profile = SandboxProfile(
        mounts=(
            BindMount("/usr", "/usr"),
            BindMount("/nonexistent-optional", "/opt/x", optional=True),
            BindMount("/var/cache/x", "/cache", writable=True),
        ),
        symlinks=(Symlink("/bin", "usr/bin"),),
        devices=("/dev/null",),
        env={"PATH": "/usr/bin", "HOME": "/tmp"},
        seccomp=dataclasses.replace(SandboxProfile().seccomp, deny=("ptrace",)),
    )
    values: dict[str, object] = {
        "argv": ["/usr/bin/python3", "-c", "pass"],
        "env": dict(profile.env),
        "job_dir": "/work/jobs/1/job",
        "root_dir": "/work/jobs/1/root",
        "jail_job_dir": "/job",
        "network": False,
        "wall_time_ms": 1500,
        "cpu_time_ms": 2000,
        "address_space_bytes": 0,
        "nproc_limit": 0,
        "cgroup_join_files": [],
        "seccomp_bpf": "",
        "cpu_usage_file": "",
        "cpu_usage_v2": False,
        "nsjail_init": "/opt/gristmill/bin/gristmill-nsjail-init",
    }
    values.update(fields)
    return JailSpec.from_profile(profile, **values)


def argv(**fields: object) -> list[str]:
    return render_argv(spec(**fields), "/usr/bin/nsjail", exists=lambda _path: False)


def flag(args: list[str], name: str) -> list[str]:
    """Every value given to `name`, in order."""
    jail_args = args[: args.index("--")]
    return [jail_args[i + 1] for i, arg in enumerate(jail_args) if arg == name]


def test_user_and_group_map_to_the_same_unprivileged_ids_never_to_root() -> None:
    args = argv()
    assert flag(args, "--user") == ["65534:65534"]
    assert flag(args, "--group") == ["65534:65534"]
    assert "-u" not in args


def test_no_network_flag_unless_the_job_was_granted_the_network() -> None:
    assert "--disable_clone_newnet" not in argv()
    assert "-N" not in argv()
    assert "--disable_clone_newnet" in argv(network=True)


def test_tmp_is_a_tmpfs_of_the_profile_size_not_nsjails_4_mib_default() -> None:
    args = argv()
    assert "-T" not in args and "--tmpfsmount" not in args
    assert flag(args, "--mount")[0] == f"none:/tmp:tmpfs:size={64 * MiB},mode=1777"


def test_dev_shm_is_a_private_tmpfs_of_the_profile_size() -> None:
    assert f"none:/dev/shm:tmpfs:size={64 * MiB},mode=1777" in flag(argv(), "--mount")


@pytest.mark.parametrize(("wall_ms", "seconds"), [(1500, "3"), (1000, "2"), (1, "2"), (0, "0")])
def test_time_limit_is_whole_seconds_rounded_up_and_later_than_our_own_deadline(
    wall_ms: int, seconds: str
) -> None:
    assert flag(argv(wall_time_ms=wall_ms), "--time_limit") == [seconds]


def test_rlimits_are_all_explicit_in_nsjails_units() -> None:
    args = argv()
    # RLIMIT_AS is not the memory limit (nsjail's 4 GiB default breaks the JVM).
    assert flag(args, "--rlimit_as") == ["inf"]
    assert flag(args, "--rlimit_fsize") == ["64"]  # MiB
    assert flag(args, "--rlimit_stack") == ["8"]  # MiB
    assert flag(args, "--rlimit_memlock") == ["64"]  # KiB
    assert flag(args, "--rlimit_nofile") == ["1024"]
    assert flag(args, "--rlimit_cpu") == ["3"]
    assert flag(args, "--rlimit_core") == ["0"]
    assert flag(argv(address_space_bytes=100 * MiB + 5), "--rlimit_as") == ["100"]


def test_mounts_symlinks_devices_and_job_dir() -> None:
    args = argv()
    assert flag(args, "--bindmount_ro") == [
        "/proc:/proc",
        "/usr:/usr",
        f"/opt/gristmill/bin/gristmill-nsjail-init:{SHIM}",
    ]
    assert flag(args, "--bindmount") == [
        "/var/cache/x:/cache",
        "/dev/null:/dev/null",
        "/work/jobs/1/root:/job",
    ]
    assert flag(args, "--symlink") == ["usr/bin:/bin"]
    assert flag(args, "--cwd") == ["/job"]
    assert flag(args, "--hostname") == ["gristmill"]


def test_the_environment_is_only_the_jobs_and_the_job_fds_are_passed() -> None:
    args = argv()
    assert flag(args, "--env") == ["PATH=/usr/bin", "HOME=/tmp"]
    assert "--keep_env" not in args and "-e" not in args
    assert flag(args, "--pass_fd") == ["3", "4", "5", "6"]
    assert args[args.index("--") :] == ["--", SHIM, "--shim", "/usr/bin/python3", "-c", "pass"]


def test_nsjail_gets_no_cgroup_flags_our_own_cgroup_keeps_the_accounting() -> None:
    assert not [arg for arg in argv() if arg.startswith("--cgroup")]


@pytest.mark.parametrize("path", ["/a:b", "/a,b"])
def test_a_value_nsjail_would_split_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="split"):
        argv(root_dir=path)


def test_kafel_policy_holds_the_same_rules_as_the_libseccomp_filter() -> None:
    policy = render_kafel(rules(["ptrace", "no_such_call"], network=False))
    assert "SYSCALL[101]" in policy  # ptrace, by number; unknown names are left out
    assert "ERRNO(38) { SYSCALL[435] }" in policy  # clone3 -> ENOSYS
    assert "SYSCALL[41](a0) { (a0 != 0x1) }" in policy  # only AF_UNIX sockets
    assert "(a0 & 0x10000000) == 0x10000000" in policy  # clone(CLONE_NEWUSER)
    assert policy.endswith("DEFAULT ALLOW")


def test_log_parsing_tells_a_signal_from_an_exit_status() -> None:
    signalled = parse_log(
        "[I][2026] pid=2 ([STANDALONE MODE]) terminated with signal: SIGSEGV (11), (PIDs left: 0)"
    )
    assert signalled.wait_status == 11
    exited = parse_log(
        "[I][2026] pid=2 ([STANDALONE MODE]) exited with status: 137, (PIDs left: 0)"
    )
    assert exited.wait_status == 137 << 8
    failed = parse_log("[E][2026][1] initCloneNs():270 Failed to build mount tree")
    assert failed.problems == ("Failed to build mount tree",)


# The real nsjail

needs_nsjail = pytest.mark.skipif(find_nsjail() is None, reason="no nsjail binary here")


@needs_nsjail
def test_loader_warnings_and_nsjail_logs_stay_out_of_the_jobs_stderr(
    nsjail_run: object,
) -> None:
    outcome = nsjail_run("bash", "echo to-stderr >&2\n")  # type: ignore[operator]
    assert outcome.stderr.data == b"to-stderr\n"


@needs_nsjail
def test_job_under_nsjail_is_pid_2_and_an_unprivileged_user(nsjail_run: object) -> None:
    code = (
        "import os\ndef main():\n"
        "    return [os.getpid(), os.getuid(), open('/proc/self/uid_map').read().split()]\n"
    )
    outcome = nsjail_run("python", code)  # type: ignore[operator]
    assert json.loads(outcome.result_json) == [2, 65534, ["65534", "65534", "1"]]


@needs_nsjail
def _run_jail(
    nsjail: str,
    argv: tuple[str, ...] = ("/bin/true",),
    files: dict[str, tuple[bytes, int]] | None = None,
    while_running: Callable[[Path], None] | None = None,
    cgroups: Cgroups | None = None,
) -> tuple[SandboxExit, bytes, bytes]:
    """One cold sandbox of the nsjail backend with `nsjail` as its nsjail binary and
    `files` ({path: (content, mode)}) as the job's: its end, its stdout and its stderr.
    `while_running(root_dir)` is called once the program runs, before it is waited for."""
    init, supervisor = find_nsjail_init(), find_nsjail_supervisor()
    assert init is not None and supervisor is not None, "make install compiles them"
    backend = SupervisedBackend(NsjailArgv(nsjail, init), supervisor, cgroups)
    base = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    try:
        for part in ("job", "root"):
            (base / part).mkdir()
        for name, (content, mode) in (files or {}).items():
            (base / "job" / name).parent.mkdir(parents=True, exist_ok=True)
            (base / "job" / name).write_bytes(content)
            (base / "job" / name).chmod(mode)
        base.chmod(0o755)
        usr = ("bin", "lib", "lib64")
        profile = SandboxProfile(
            mounts=(BindMount("/usr", "/usr"),),
            symlinks=tuple(Symlink(f"/{name}", f"usr/{name}") for name in usr),
        )
        limits = Limits(
            wall_time_ms=5000,
            memory_bytes=64 << 20,
            cpu_time_ms=5000,
            processes=8,
            output_bytes=4096,
        )
        plan = SandboxPlan(profile, argv, {}, base / "job", base / "root", limits)

        async def ended() -> tuple[SandboxExit, bytes, bytes]:
            sandbox = await backend.start(plan)
            await sandbox.started()
            if while_running is not None:
                await asyncio.to_thread(while_running, base / "root")
            await sandbox.send_job(b"")
            stdout, stderr = await asyncio.gather(sandbox.stdout.read(), sandbox.stderr.read())
            return await sandbox.wait(), stdout, stderr

        async def run() -> tuple[SandboxExit, bytes, bytes]:
            try:
                # A sandbox stuck past its limits fails the test, not the whole run.
                return await asyncio.wait_for(ended(), 60)
            finally:
                await backend.close()

        return asyncio.run(run())
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_nsjail_that_cannot_start_is_a_set_up_error_that_says_why() -> None:
    """What fails in the job's pid 1 before it becomes nsjail (`nsjail_init.c`) goes to
    nsjail's log: the sandbox's end names it."""
    end, _, _ = _run_jail("/nonexistent/nsjail")
    assert "cannot start nsjail: exec /nonexistent/nsjail" in end.setup_error, end


def test_a_program_the_jail_cannot_start_fails_as_a_shells_exec_would() -> None:
    """The shim (`nsjail.SHIM`) has put the job's stderr in place and said "running" when
    it execs the program: a program that is not there is the job's failure, 127, and
    its stderr says why."""
    nsjail = find_nsjail()
    assert nsjail is not None
    end, _, stderr = _run_jail(nsjail, ("/nonexistent/program", "x"))
    assert (end.exit_code, end.setup_error) == (127, ""), end
    assert stderr == b"gristmill-jail: exec /nonexistent/program: No such file or directory\n"


def _fake_nsjail(tmp_path: Path, script: str) -> str:
    path = tmp_path / "nsjail"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    tmp_path.chmod(0o755)
    return str(path)


def test_the_programs_end_comes_from_nsjails_log_through_the_compiled_supervisor(
    tmp_path: Path,
) -> None:
    """The compiled supervisor sends nsjail's log as it is; the service reads the
    program's end from it, and a byte that is not UTF-8 there breaks nothing."""
    ran = _fake_nsjail(
        tmp_path,
        "printf r >&6\n"
        "printf '[I][2026] pid=2 ([STANDALONE MODE]) exited with status: 3, \\377\\n' >&2\n",
    )
    end, _, _ = _run_jail(ran)
    assert (end.exit_code, end.setup_error) == (3, ""), end
    failed = _fake_nsjail(
        tmp_path, "printf '[E][2026] f():1 Failed \\377 \\370\\200\\200 here\\n' >&2\nexit 255\n"
    )
    end, _, _ = _run_jail(failed)
    assert end.setup_error == "nsjail: Failed \ufffd \ufffd\ufffd\ufffd here", end
    # A log past what is kept of it (orphans reaped without end): its tail still tells.
    orphans = 3 * LOG_KEPT // 60
    long_log = _fake_nsjail(
        tmp_path,
        "printf r >&6\n"
        f"i=0; while [ $i -lt {orphans} ]; do i=$((i + 1)); "
        "echo '[I][2026] pid=3 ([UNKNOWN]) exited with status: 1, (PIDs left: 1)'; done >&2\n"
        "echo '[I][2026] pid=2 ([STANDALONE MODE]) exited with status: 4, (PIDs left: 0)' >&2\n",
    )
    end, _, _ = _run_jail(long_log)
    assert (end.exit_code, end.setup_error) == (4, ""), end
    # More than a pipe holds by default, logged before the program runs (the supervisor
    # reads the log only from then on): nsjail is not left blocked on it.
    set_up = 150 * 1024 // 60
    chatty = _fake_nsjail(
        tmp_path,
        f"i=0; while [ $i -lt {set_up} ]; do i=$((i + 1)); "
        "echo '[I][2026] mount(): a line of sixty bytes, as nsjail logs its set-up'; done >&2\n"
        "printf r >&6\n"
        "echo '[I][2026] pid=2 ([STANDALONE MODE]) exited with status: 5, (PIDs left: 0)' >&2\n",
    )
    end, _, _ = _run_jail(chatty)
    assert (end.exit_code, end.stopped_for, end.setup_error) == (5, None, ""), end


def test_the_job_ends_with_its_program_not_with_the_rest_of_its_jail(tmp_path: Path) -> None:
    """With a cgroup to account for the job, its end is reported once nsjail logs the
    program's: the rest of the jail (here an nsjail that would stay 31 s, past the job's
    5 s wall limit) is killed, not waited for, and gone soon after."""
    try:
        cgroups = detect()
    except CgroupsUnavailable as problem:
        pytest.skip(f"no cgroups here: {problem}")
    lingering = _fake_nsjail(
        tmp_path,
        "printf r >&6\n"
        "echo '[I][2026] pid=2 ([STANDALONE MODE]) exited with status: 3, (PIDs left: 0)' >&2\n"
        "exec sleep 31.4159\n",
    )
    end, _, _ = _run_jail(lingering, cgroups=cgroups)
    assert (end.exit_code, end.stopped_for, end.setup_error) == (3, None, ""), end
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        p.info["cmdline"] == ["sleep", "31.4159"] for p in psutil.process_iter(["cmdline"])
    ):
        time.sleep(0.1)
    assert time.monotonic() < deadline, "the rest of the jail outlived the job"


def test_a_job_without_network_has_the_compiled_supervisor_and_its_files() -> None:
    """A cold job's files reach its tmpfs through the compiled supervisor: directories,
    modes and the jail's user as their owner."""
    nsjail = find_nsjail()
    assert nsjail is not None
    supervisors: list[str] = []

    def look(root: Path) -> None:
        for process in psutil.process_iter(["cmdline", "exe"]):
            if str(root) in (process.info["cmdline"] or []):
                supervisors.append(Path(process.info["exe"] or "").name)

    files = {"a.txt": (b"a", 0o644), "sub/run.sh": (b"echo", 0o755)}
    # It waits for its stdin's end, which comes after `look`.
    command = ("/bin/sh", "-c", "read -r _; exec stat -c '%n %a %u' a.txt sub sub/run.sh")
    end, stdout, _ = _run_jail(nsjail, command, files, look)
    assert (end.exit_code, end.setup_error) == (0, ""), end
    assert stdout.decode().split("\n") == [
        "a.txt 644 65534",
        "sub 755 65534",
        "sub/run.sh 755 65534",
        "",
    ]
    assert supervisors == ["gristmill-nsjail-supervisor"]


def test_parse_log_takes_the_programs_end_not_an_orphans():
    summary = parse_log(
        "[I][2026] pid=2 ([STANDALONE MODE]) exited with status: 0, (PIDs left: 0)\n"
        "[I][2026] pid=3 ([UNKNOWN]) exited with status: 1, (PIDs left: -1)\n"
        "[W][2026][1] removeProc():257 pid=3 doesn't exist ?\n"
    )
    assert summary.wait_status == 0
    assert summary.problems == ()


def test_a_log_past_what_is_kept_still_gives_the_set_up_problems(tmp_path: Path) -> None:
    """The compiled supervisor keeps the head and the tail of nsjail's log only: a job
    making it log without end costs no more than that, and what failed at set-up, in
    the head, is still told. (Under what the log's pipe holds unread before the program
    runs: nsjail blocks past it, as on a slow terminal.)"""
    orphans = 3 * LOG_KEPT // 60
    failed = _fake_nsjail(
        tmp_path,
        "echo '[E][2026][1] initCloneNs():270 Failed to build mount tree' >&2\n"
        f"i=0; while [ $i -lt {orphans} ]; do i=$((i + 1)); "
        "echo '[I][2026] pid=3 ([UNKNOWN]) exited with status: 1, (PIDs left: 1)'; done >&2\n"
        "exit 255\n",
    )
    end, _, _ = _run_jail(failed)
    assert end.setup_error == "nsjail: Failed to build mount tree", end
