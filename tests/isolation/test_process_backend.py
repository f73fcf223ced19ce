"""Each backend (process, nsjail) holds its promises: each test attacks one for real."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import signal
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from gristmill.isolation.backend import Sandbox, StopReason
from gristmill.isolation.select import open_backend
from gristmill.isolation.supervised_backend import SupervisedBackend
from gristmill.isolation.supervised_sandbox import _supervisor_gone
from gristmill.jobs.executor import Executor
from gristmill.jobs.mounts import job_plan
from gristmill.jobs.workspace import Workspace
from gristmill.model import Verdict

from .conftest import LIMITS, run

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _alive(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


async def test_job_is_an_unprivileged_user_on_the_host(executor: Executor) -> None:
    code = "def main():\n    return open('/proc/self/uid_map').read().split()\n"
    outcome = await run(executor, "python", code)
    assert outcome.verdict is Verdict.SUCCESS
    assert json.loads(outcome.result_json) == ["65534", "65534", "1"]


PF_EXITING = 0x4  # include/linux/sched.h: the process is in its exit


def _running(marker: str) -> list[int]:
    """The processes `_alive` finds that are not dying: no SIGKILL pending, not exiting."""
    running = []
    for process in _alive(marker):
        proc = Path(f"/proc/{process.pid}")
        try:
            status = (proc / "status").read_text()
            flags = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[6])
        except OSError:
            continue  # gone
        pending = [
            int(line.split()[1], 16)
            for line in status.splitlines()
            if line.startswith(("SigPnd:", "ShdPnd:"))
        ]
        if not flags & PF_EXITING and not any(m & 1 << (signal.SIGKILL - 1) for m in pending):
            running.append(process.pid)
    return running


async def _killed_by_the_outcome(markers: tuple[str, ...]) -> None:
    """What the job left behind is killed when its outcome comes (gone, or dying of a
    SIGKILL sent before it: a sandbox reports its program's end before its jail is torn
    down), and gone soon after (10 s on a loaded machine)."""
    for marker in markers:
        assert _running(marker) == [], marker
    for _ in range(100):
        if not any(_alive(marker) for marker in markers):
            return
        await asyncio.sleep(0.1)
    assert [_alive(marker) for marker in markers] == [[]] * len(markers)


async def test_background_processes_are_killed_when_the_job_ends(executor: Executor) -> None:
    code = "sleep 31337 &\n( setsid sleep 31338 & )\nnohup sleep 31339 >/dev/null 2>&1 &\necho ok\n"
    outcome = await run(executor, "bash", code)
    assert outcome.verdict is Verdict.SUCCESS
    await _killed_by_the_outcome(("sleep 31337", "sleep 31338", "sleep 31339"))


async def test_double_forked_daemon_ignoring_signals_is_killed(executor: Executor) -> None:
    code = textwrap.dedent(
        """
        import os, signal, time
        def main():
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                        signal.signal(sig, signal.SIG_IGN)
                    os.execv("/bin/sleep", ["sleep", "27182"])
                os._exit(0)
            time.sleep(0.2)
            return "parent done"
        """
    )
    outcome = await run(executor, "python", code)
    assert outcome.verdict is Verdict.SUCCESS
    await _killed_by_the_outcome(("sleep 27182",))


async def test_memory_hog_is_memory_limit(executor: Executor) -> None:
    code = "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(8 << 20))\n"
    outcome = await run(executor, "python", code, memory_bytes=64 << 20)
    assert outcome.verdict is Verdict.MEMORY_LIMIT
    assert outcome.usage.peak_memory_bytes >= 60 << 20


async def test_tmpfs_file_counts_against_memory(executor: Executor) -> None:
    code = "head -c 200M /dev/zero > /tmp/big\necho wrote\n"
    outcome = await run(executor, "bash", code, memory_bytes=48 << 20)
    assert outcome.verdict in (Verdict.MEMORY_LIMIT, Verdict.ERROR)


async def test_fork_bomb_is_process_limit(executor: Executor) -> None:
    code = "import os\ndef main():\n    while True:\n        os.fork()\n"
    outcome = await run(executor, "python", code, processes=16)
    assert outcome.verdict is Verdict.PROCESS_LIMIT
    assert outcome.usage.processes <= 16


async def test_cpu_spin_is_cpu_limit_at_the_limit(executor: Executor) -> None:
    code = "def main():\n    while True:\n        pass\n"
    outcome = await run(executor, "python", code, cpu_time_ms=300)
    assert outcome.verdict is Verdict.CPU_LIMIT
    assert outcome.usage.user_cpu_ms + outcome.usage.system_cpu_ms >= 300


async def test_sleep_ignoring_sigterm_is_timeout(executor: Executor) -> None:
    code = "trap '' TERM\nsleep 30\n"
    started = time.monotonic()
    outcome = await run(executor, "bash", code, wall_time_ms=400)
    assert outcome.verdict is Verdict.TIMEOUT
    assert time.monotonic() - started < 10


async def test_output_flood_keeps_exactly_the_cap(executor: Executor) -> None:
    outcome = await run(executor, "bash", "yes 0123456789\n", output_bytes=1000)
    assert outcome.verdict is Verdict.OUTPUT_LIMIT
    assert outcome.stdout.truncated
    assert len(outcome.stdout.data) == 1000
    assert outcome.stdout.data.startswith(b"0123456789\n")


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("ptrace", 101),
        ("mount", 165),
        ("unshare", 272),
        ("setns", 308),
        ("bpf", 321),
        ("keyctl", 250),
        ("io_uring_setup", 425),
        ("kexec_load", 246),
        ("settimeofday", 164),
        ("sethostname", 170),
    ],
)
async def test_dangerous_syscalls_are_refused(executor: Executor, name: str, number: int) -> None:
    code = textwrap.dedent(
        f"""
        import ctypes
        def main():
            libc = ctypes.CDLL(None, use_errno=True)
            result = libc.syscall({number}, 0, 0, 0, 0, 0)
            return [result, ctypes.get_errno()]
        """
    )
    outcome = await run(executor, "python", code)
    assert outcome.verdict is Verdict.SUCCESS, outcome
    result, error = json.loads(outcome.result_json)
    assert result == -1
    assert error == 1, f"{name} answered errno {error}, not EPERM"


@pytest.mark.parametrize(
    ("family", "kind"),
    [
        ("AF_INET", "SOCK_STREAM"),
        ("AF_INET6", "SOCK_DGRAM"),
        ("AF_NETLINK", "SOCK_RAW"),
        ("AF_PACKET", "SOCK_RAW"),
    ],
)
async def test_sockets_other_than_unix_are_refused_without_network(
    executor: Executor, family: str, kind: str
) -> None:
    code = textwrap.dedent(
        f"""
        import socket
        def main():
            try:
                socket.socket(socket.{family}, socket.{kind})
            except OSError as error:
                return error.errno
            return "opened"
        """
    )
    outcome = await run(executor, "python", code)
    assert outcome.verdict is Verdict.SUCCESS
    assert outcome.result_json != '"opened"'


async def test_unix_sockets_still_work_inside_the_job(executor: Executor) -> None:
    code = textwrap.dedent(
        """
        import socket
        def main():
            a, b = socket.socketpair()
            a.sendall(b"ping")
            return b.recv(4).decode()
        """
    )
    outcome = await run(executor, "python", code)
    assert outcome.result_json == '"ping"'


async def test_namespace_creating_clone_is_refused(executor: Executor) -> None:
    code = textwrap.dedent(
        """
        import ctypes
        def main():
            libc = ctypes.CDLL(None, use_errno=True)
            # clone(CLONE_NEWUSER | SIGCHLD): a new user namespace would regain capabilities.
            result = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)
            return [result, ctypes.get_errno()]
        """
    )
    outcome = await run(executor, "python", code)
    assert json.loads(outcome.result_json) == [-1, 1]


async def test_jobs_see_only_their_own_processes(executor: Executor) -> None:
    code = textwrap.dedent(
        """
        import os
        def main():
            return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
        """
    )
    outcome = await run(executor, "python", code)
    # The program itself: nothing of the host, nor the job's init or nsjail (pid 1),
    # which live partly outside the job's namespaces (hidepid).
    assert json.loads(outcome.result_json) == [2]


async def test_root_and_system_directories_are_read_only(executor: Executor) -> None:
    code = textwrap.dedent(
        """
        def main():
            results = {}
            for path in ["/x", "/usr/x", "/etc/x", "/job/x", "/tmp/x"]:
                try:
                    open(path, "w").write("x")
                    results[path] = "written"
                except OSError as error:
                    results[path] = error.errno
            return results
        """
    )
    outcome = await run(executor, "python", code)
    assert json.loads(outcome.result_json) == {
        "/x": 30,
        "/usr/x": 30,
        "/etc/x": 30,
        "/job/x": "written",
        "/tmp/x": "written",
    }


async def test_symlink_planted_in_job_dir_does_not_reach_the_host(executor: Executor) -> None:
    victim = Path("/var/tmp/gristmill-victim")
    victim.write_text("host file")
    victim.chmod(0o666)
    code = f"ln -s {victim} /job/link\necho overwritten > /job/link || echo refused\n"
    outcome = await run(executor, "bash", code)
    assert outcome.verdict in (Verdict.SUCCESS, Verdict.ERROR)
    assert victim.read_text() == "host file"
    victim.unlink()


async def test_environment_holds_only_what_the_job_was_given(executor: Executor) -> None:
    os.environ["GRISTMILL_TEST_SECRET"] = "leak"
    code = "import os\ndef main():\n    return dict(os.environ)\n"
    outcome = await run(executor, "python", code)
    env = json.loads(outcome.result_json)
    assert "GRISTMILL_TEST_SECRET" not in env
    assert env["HOME"] == "/tmp"
    assert not {"SSH_AUTH_SOCK", "PIP_CERT", "VIRTUAL_ENV"} & set(env)


async def test_no_cgroup_is_left_after_jobs(executor: Executor) -> None:
    """A job's group goes once its supervisor has exited, off the outcome's path: soon
    after the outcome (within 10 s on a loaded machine), never left behind."""
    await run(executor, "bash", "echo hi\n")
    cgroups = getattr(executor.backend, "cgroups", None)
    if cgroups is None:
        pytest.skip("no cgroups on this machine")

    def left() -> list[Path]:
        return [group for parent in cgroups.parents.values() for group in parent.glob("job-*")]

    for _ in range(100):
        if not left():
            break
        await asyncio.sleep(0.1)
    assert left() == []


async def test_a_cpu_hog_of_many_processes_gets_no_more_than_its_cpu_quota(
    executor: Executor,
) -> None:
    code = textwrap.dedent(
        """
        import os, time
        def main():
            start = time.monotonic()
            for _ in range(4):
                if os.fork() == 0:
                    end = time.monotonic() + 2
                    while time.monotonic() < end:
                        pass
                    os._exit(0)
            for _ in range(4):
                os.wait()
            used = os.times().children_user + os.times().children_system
            return [used, time.monotonic() - start]
        """
    )
    outcome = await run(executor, "python", code, cpu_millicores=250, wall_time_ms=20000)
    used_s, wall_s = json.loads(outcome.result_json)
    # A quarter of a core over the run, with a period's worth of slack per child.
    assert used_s <= 0.25 * wall_s + 0.5


async def test_vsock_is_refused_even_with_the_network(executor: Executor) -> None:
    code = textwrap.dedent(
        """
        import errno, socket
        def main():
            try:
                socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
            except OSError as error:
                return errno.errorcode[error.errno]
            return "opened"
        """
    )
    outcome = await run(executor, "python", code, network=True)
    assert json.loads(outcome.result_json) == "EAFNOSUPPORT"


@contextlib.asynccontextmanager
async def _bash_sandbox(executor: Executor, argv: tuple[str, ...]) -> AsyncIterator[Sandbox]:
    """A cold sandbox of the bash runtime's profile running `argv`, its job sent."""
    runtime = executor.registry.get("bash")
    workspace = Workspace.empty(executor.jobs_dir, runtime.profile.uid, runtime.profile.gid)
    try:
        runtime_dir = executor.runtime_dirs / "bash"
        plan = job_plan(runtime, runtime_dir, workspace, argv, {}, LIMITS, None, None)
        sandbox = await executor.backend.start(plan)
        await sandbox.send_job(b"")
        yield sandbox
    finally:
        workspace.remove()


async def test_a_sandbox_waited_for_twice_ends_once(executor: Executor) -> None:
    """A caller past its wall limit stops the sandbox and waits again while its first wait
    is still pending: both get the same end, and the sandbox's pipes are closed once."""
    async with _bash_sandbox(executor, ("/bin/sh", "-c", "exit 3")) as sandbox:
        first, second = await asyncio.gather(sandbox.wait(), sandbox.wait())
    assert first == second
    assert first.exit_code == 3, first


async def test_two_stops_in_a_row_end_the_job_for_the_first(executor: Executor) -> None:
    """The service may stop a job twice before its supervisor reads (an output flood, then
    its client gone): each stop is a command of its own, and the first is the job's end."""
    async with _bash_sandbox(executor, ("/bin/bash", "-c", "sleep 60")) as sandbox:
        assert await sandbox.started()
        sandbox.stop(StopReason.OUTPUT)
        sandbox.stop(StopReason.CANCEL)
        end = await asyncio.wait_for(sandbox.wait(), 30)
    assert end.stopped_for is StopReason.OUTPUT, end


async def test_the_job_starts_with_every_signal_at_its_default(executor: Executor) -> None:
    """The service's Python ignores SIGPIPE and SIGXFSZ, glibc's posix_spawn its internal
    signals, and an ignored signal stays ignored through exec: the job gets every signal
    at its default and none blocked (a write past the file size limit kills it), under
    either backend."""
    code = "grep -E '^Sig(Ign|Blk)' /proc/self/status | tr '\\n\\t' '  '\n"
    outcome = await run(executor, "bash", code)
    assert json.loads(outcome.result_json).split() == [
        "SigBlk:",
        "0000000000000000",
        "SigIgn:",
        "0000000000000000",
    ], outcome


async def test_a_sandbox_dropped_at_its_outcome_leaves_no_task_behind(executor: Executor) -> None:
    """The outcome comes at the supervisor's exit report, before its report pipe ends: a
    caller dropping the sandbox then must not leave the pipe's reader to the garbage
    collector (asyncio's "Task was destroyed but it is pending!", a task never finished)."""
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    default_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: problems.append(context["message"]))
    runtime = executor.registry.get("bash")
    runtime_dir = executor.runtime_dirs / "bash"
    try:
        for _ in range(5):
            workspace = Workspace.empty(executor.jobs_dir, runtime.profile.uid, runtime.profile.gid)
            try:
                plan = job_plan(
                    runtime, runtime_dir, workspace, ("/bin/true",), {}, LIMITS, None, None
                )
                sandbox = await executor.backend.start(plan)
                await sandbox.send_job(b"")
                assert (await sandbox.wait()).exit_code == 0
                del sandbox
                gc.collect()
            finally:
                workspace.remove()
        await asyncio.sleep(0.5)  # the supervisors' exits: each reader ends
        gc.collect()
    finally:
        loop.set_exception_handler(default_handler)
    assert problems == []


async def test_closing_the_backend_ends_a_sandbox_nobody_waited_for(executor: Executor) -> None:
    """A backend closing (the server stopping) while one of its sandboxes still runs and
    nobody waits for it: the job is killed, its group removed, and close returns."""
    backend = open_backend(executor.backend.name, executor.work_dir)
    assert isinstance(backend, SupervisedBackend)
    runtime = executor.registry.get("bash")
    workspace = Workspace.empty(executor.jobs_dir, runtime.profile.uid, runtime.profile.gid)
    marker = f"gristmill-unwaited-{os.getpid()}"
    try:
        argv = ("/bin/bash", "-c", f"exec -a {marker} sleep 600")
        runtime_dir = executor.runtime_dirs / "bash"
        plan = job_plan(runtime, runtime_dir, workspace, argv, {}, LIMITS, None, None)
        sandbox = await backend.start(plan)
        await sandbox.send_job(b"")
        assert await sandbox.started()
        for _ in range(100):
            if _alive(marker):
                break
            await asyncio.sleep(0.05)
        assert _alive(marker)
        groups = backend.cgroups.parents if backend.cgroups else {}
        await asyncio.wait_for(backend.close(), 30)
    finally:
        workspace.remove()
    assert not _alive(marker)
    assert not [
        p for parent in groups.values() if parent.exists() for p in parent.iterdir() if p.is_dir()
    ]


async def test_a_supervisors_exit_is_awaited_whatever_number_its_descriptor_gets() -> None:
    """A busy server holds well over 1024 descriptors (pipes of every sandbox): waiting for
    a supervisor to exit must work with a descriptor past what select() takes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE's hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1100:
            fillers.append(os.open("/dev/null", os.O_RDONLY))
        child = subprocess.Popen(["sleep", "0.2"])
        began = time.monotonic()
        _supervisor_gone(child.pid, None)
        assert child.wait(timeout=5) == 0
        assert time.monotonic() - began < 4
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
