"""Forked interpreters (`pool.fork_interpreters`, `isolation/template.py`): each test
attacks one promise of a job whose Python is a template's child, on the real sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from gristmill.config import PoolConfig
from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.languages import Registry
from gristmill.model import Outcome, Verdict
from tests.conftest import remove_work_dir

from .conftest import run

pytestmark = pytest.mark.asyncio(loop_scope="session")

FORKED = "import sys\nFORKED = 'gristmill.isolation.template' in sys.modules\n"
"""Code that knows whether its interpreter was a template's child: the template's own
modules are in it (and in no exec'd interpreter)."""


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["cold", "warm"])
async def forked(request: pytest.FixtureRequest) -> AsyncIterator[Executor]:
    """A real executor on the process backend with forked interpreters, without and with
    warm sandboxes (a warm one is a template's child waiting for its job)."""
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    backend = open_backend("process", work_dir, fork_interpreters=True)
    executor = Executor(
        compose(Registry(), backend, work_dir, pool=PoolConfig(enabled=request.param == "warm"))
    )
    yield executor
    await executor.close()
    remove_work_dir(work_dir)


async def _result(executor: Executor, code: str, **args: object) -> Any:
    outcome = await run(executor, "python", FORKED + textwrap.dedent(code), dict(args))
    assert outcome.verdict is Verdict.SUCCESS, outcome
    return json.loads(outcome.result_json)


def _templates() -> list[psutil.Process]:
    """The templates of this process's fork servers (their children: a template's own
    children, the jobs' builders and inits, have its command line too)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if "--template" not in (process.info["cmdline"] or []):
            continue
        with contextlib.suppress(psutil.Error):
            parent = process.parent()
            ancestors = [p.pid for p in process.parents()]
            if parent and "forkserver" in " ".join(parent.cmdline()) and os.getpid() in ancestors:
                found.append(process)
    return found


async def test_a_python_job_is_a_templates_child(forked: Executor) -> None:
    assert await _result(forked, "def main(a: int):\n    return [FORKED, a + 1]\n", a=1) == [
        True,
        2,
    ]


async def test_a_forked_job_starts_as_an_execd_interpreter_would(forked: Executor) -> None:
    """Its command line, environment, signals and paths are those of the interpreter an exec
    would have started, not the template's (which was started with `--template` and a
    descriptor, and has SIGCHLD ignored)."""
    code = """
        import os, signal, sys
        def main():
            status = open('/proc/self/status').read().splitlines()
            return [
                FORKED,
                [line.split()[1] for line in status if line.startswith(('SigBlk', 'SigIgn'))],
                [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGCHLD)],
                sys.argv, sys.orig_argv, sys.modules['__main__'].__file__,
                os.environ['HOME'], os.getcwd(),
            ]
    """
    assert await _result(forked, code) == [
        True,
        # SIGPIPE and SIGXFSZ ignored, as by every interpreter's start; nothing blocked.
        ["0000000000000000", "0000000001001000"],
        ["<built-in function default_int_handler>", "0"],
        ["/gristmill/runtime/wrapper.py"],
        ["/usr/bin/python3", "-I", "-S", "-B", "-u", "/gristmill/runtime/wrapper.py"],
        "/gristmill/runtime/wrapper.py",
        "/tmp",
        "/job",
    ]


async def test_a_forked_job_holds_no_capability_credential_or_descriptor_of_the_template(
    forked: Executor,
) -> None:
    """The child built its jail with every capability of its user namespace; no exec
    drops them: it does, the bounding set too. Its descriptors are the job's: 0 to 3 (the
    wrapper has read and closed 4, its job)."""
    code = """
        import os
        def main():
            status = open('/proc/self/status').read().splitlines()
            caps = {line.split()[1] for line in status if line.startswith('Cap')}
            fds = [int(f) for f in os.listdir('/proc/self/fd')]
            fds = [f for f in fds if os.path.exists(f'/proc/self/fd/{f}')]
            ids = [os.getresuid(), os.getresgid(), open('/proc/self/uid_map').read().split()]
            return [FORKED, sorted(caps), fds, ids]
    """
    assert await _result(forked, code) == [
        True,
        ["0000000000000000"],
        [0, 1, 2, 3],
        # The jail's user, mapped to that same unprivileged user on the host, never root.
        [[65534] * 3, [65534] * 3, ["65534", "65534", "1"]],
    ]


async def test_a_forked_job_shares_no_writable_memory(forked: Executor) -> None:
    """What the job has of the template is copied on write: no shared mapping it may write."""
    code = """
        def main():
            maps = open('/proc/self/maps').read().splitlines()
            return [FORKED, [m for m in maps if m.split()[1][1] == 'w' and m.split()[1][3] == 's']]
    """
    assert await _result(forked, code) == [True, []]


async def test_two_forked_jobs_in_a_row_leave_nothing_to_each_other(forked: Executor) -> None:
    """A job's changes to the interpreter it was forked as (modules, their state, the
    environment, files) are its own copy; its random numbers are its own too (`random`,
    had the template imported it, reseeds in a forked child)."""
    first = """
        import os, random, sys, json
        def main():
            sys.modules['os'].planted = 'by the first job'
            sys.modules['planted'] = sys
            json.planted = True
            os.environ['PLANTED'] = '1'
            open('/tmp/planted', 'w').write('x')
            return [FORKED, random.random()]
    """
    second = """
        import os, random, sys, json
        def main():
            return [
                FORKED,
                random.random(),
                hasattr(os, 'planted') or 'planted' in sys.modules or hasattr(json, 'planted'),
                'PLANTED' in os.environ,
                os.path.exists('/tmp/planted'),
            ]
    """
    planted = await _result(forked, first)
    found = await _result(forked, second)
    assert planted[0] is True and found[0] is True
    assert found[2:] == [False, False, False]
    assert planted[1] != found[1]


async def test_a_forked_job_cannot_reach_its_template(forked: Executor) -> None:
    """Not by its pid (another pid namespace: the job's init has no parent there), not by a
    signal to it, not through /proc; the template serves the next job."""
    await _result(forked, "def main():\n    return FORKED\n")
    (template,) = _templates()
    code = """
        import os, signal
        def main(pid: int):
            try:
                os.kill(pid, signal.SIGKILL)
                sent = 'sent'
            except OSError as error:
                sent = type(error).__name__
            return [FORKED, os.getppid(), os.path.exists(f'/proc/{pid}'), sent]
    """
    found = await _result(forked, code, pid=template.pid)
    assert found == [True, 1, False, "ProcessLookupError"], found
    assert template.is_running() and template.status() != psutil.STATUS_ZOMBIE
    assert await _result(forked, "def main():\n    return FORKED\n") is True
    assert _templates() == [template]


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (
            "def main():\n    hog = []\n    while True:\n        hog.append(bytearray(8 << 20))\n",
            Verdict.MEMORY_LIMIT,
        ),
        ("import os\ndef main():\n    while True:\n        os.fork()\n", Verdict.PROCESS_LIMIT),
        ("def main():\n    while True:\n        pass\n", Verdict.CPU_LIMIT),
        ("import time\ndef main():\n    time.sleep(60)\n", Verdict.TIMEOUT),
    ],
    ids=["memory", "processes", "cpu", "wall"],
)
async def test_a_forked_jobs_limits_are_its_own(
    forked: Executor, code: str, verdict: Verdict
) -> None:
    """Its cgroup, its rlimits and its clocks are the job's: the template is in none of
    them, and serves the next job."""
    limits: dict[str, Any] = {
        "memory_bytes": 64 << 20,
        "processes": 8,
        "cpu_time_ms": 1000,
        # Room for a second of CPU on a loaded machine (a spin gets a fraction of a core).
        "wall_time_ms": 20_000 if verdict is Verdict.CPU_LIMIT else 2000,
    }
    outcome: Outcome = await run(forked, "python", code, **limits)
    assert outcome.verdict is verdict, outcome
    assert await _result(forked, "def main():\n    return FORKED\n") is True


async def test_a_forked_job_holds_no_more_memory_than_an_execd_one(forked: Executor) -> None:
    """The template's pages it shares are charged to the template's group, not the job's:
    its group's limit is lowered by them, so that its own count of its memory (RssAnon,
    which counts them) cannot pass its limit, as an exec'd interpreter's cannot."""
    code = """
        def _anonymous():
            with open('/proc/self/status') as status:
                return next(int(l.split()[1]) << 10 for l in status if l.startswith('RssAnon'))
        def main(limit: int):
            hoard = []
            while _anonymous() < limit + (4 << 20):
                hoard.append(b'\\x01' * (1 << 20))
            return 'past its limit'
    """
    limit = 64 << 20
    outcome = await run(
        forked, "python", textwrap.dedent(code), {"limit": limit}, memory_bytes=limit
    )
    assert outcome.verdict is Verdict.MEMORY_LIMIT, outcome


async def test_a_killed_template_is_started_again(forked: Executor) -> None:
    """A job started while the template is gone is exec'd; a later one is forked again, from
    a new template."""
    await _result(forked, "def main():\n    return FORKED\n")
    (template,) = _templates()
    template.send_signal(signal.SIGKILL)
    template.wait(30)
    outcome = await run(forked, "python", "def main():\n    return 1\n")
    assert outcome.verdict is Verdict.SUCCESS, outcome
    # A template that died is started again at most once a second (`template.RESTART_S`).
    for _ in range(500):
        if await _result(forked, "def main():\n    return FORKED\n"):
            break
    else:
        pytest.fail("no job was forked again")
    (again,) = _templates()
    assert again.pid != template.pid


async def test_a_network_job_is_never_forked(forked: Executor) -> None:
    """Its network namespace is made by its supervisor, which the template's child is not
    a child of: it is exec'd."""
    outcome = await run(forked, "python", FORKED + "def main():\n    return FORKED\n", network=True)
    assert outcome.verdict is Verdict.SUCCESS, outcome
    assert json.loads(outcome.result_json) is False


async def test_the_template_ends_with_its_backend() -> None:
    """Closing the backend (the service's end) ends its fork server, whose templates then
    see their requests' end and exit: nothing of the mode outlives the service."""
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    executor = Executor(
        compose(Registry(), open_backend("process", work_dir, fork_interpreters=True), work_dir)
    )
    try:
        assert await _result(executor, "def main():\n    return FORKED\n") is True
        ours = [t for t in _templates() if str(work_dir) in " ".join(t.cmdline())]
        assert len(ours) == 1
    finally:
        await executor.close()
        remove_work_dir(work_dir)
    ours[0].wait(30)


async def test_the_template_ends_with_a_killed_fork_server() -> None:
    """Only the fork server holds the template's requests' socket between jobs: killed,
    its template sees the end of its requests and exits, orphaned for no longer."""
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    backend = open_backend("process", work_dir, fork_interpreters=True)
    executor = Executor(compose(Registry(), backend, work_dir))
    try:
        assert await _result(executor, "def main():\n    return FORKED\n") is True
        (template,) = [t for t in _templates() if str(work_dir) in " ".join(t.cmdline())]
        fork_server = template.parent()
        assert fork_server is not None
        fork_server.send_signal(signal.SIGKILL)
        template.wait(30)
    finally:
        await executor.close()
        remove_work_dir(work_dir)
