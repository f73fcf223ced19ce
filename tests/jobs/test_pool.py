"""Warm sandboxes: a job in one runs under its own limits, sees nothing of any other
job, and is billed only for what it did after its hand-over. Both backends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gristmill.config import PoolConfig
from gristmill.errors import SandboxFailure
from gristmill.isolation.cgroups import Cgroups, Version
from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.jobs.pool import Kind, Warm, WarmPool
from gristmill.languages import Registry
from gristmill.model import Job, JobEvent, JobFile, Limits, Outcome, StartedEvent, Verdict
from tests.conftest import remove_work_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

POOL_LIMITS = Limits(
    wall_time_ms=600_000,
    memory_bytes=512 << 20,
    cpu_time_ms=600_000,
    processes=256,
    output_bytes=1 << 20,
)
JOB_LIMITS = Limits(
    wall_time_ms=5000, memory_bytes=96 << 20, cpu_time_ms=5000, processes=16, output_bytes=1 << 16
)


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["process", "nsjail"])
async def pooled(request: pytest.FixtureRequest) -> AsyncIterator[Executor]:
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-pool-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    try:
        backend = open_backend(request.param, work_dir)
    except SandboxFailure as unusable:
        pytest.skip(f"{request.param}: {unusable}")
    pool = PoolConfig(enabled=True, per_language=1, max_sandboxes=4, idle_s=60)
    executor = Executor(compose(Registry(), backend, work_dir, pool=pool, pool_limits=POOL_LIMITS))
    yield executor
    await executor.close()
    remove_work_dir(work_dir)


def job(language: str, code: str, **limits: Any) -> Job:
    return Job("pooled", language, code, "main", {}, dataclasses.replace(JOB_LIMITS, **limits))


async def warm_run(
    executor: Executor,
    language: str,
    code: str,
    files: tuple[JobFile, ...] = (),
    output_files: tuple[str, ...] = (),
    **limits: Any,
) -> Outcome:
    """Runs the job in a warm sandbox, waiting for the pool to have one first."""
    if executor.pool.ready(language) == 0:
        warm_up = "def main():\n    return 0\n" if language == "python" else "true\n"
        await executor.run(job(language, warm_up))
    for _ in range(300):
        if executor.pool.ready(language):
            break
        await asyncio.sleep(0.05)
    warm = dataclasses.replace(
        job(language, code, **limits), files=files, output_files=output_files
    )
    outcome = await executor.run(warm)
    assert outcome.warm_sandbox, outcome
    return outcome


async def test_a_warm_job_runs_and_says_so(pooled):
    outcome = await warm_run(pooled, "python", "def main(a=2):\n    return a * 21\n")
    assert outcome.verdict is Verdict.SUCCESS and outcome.result_json == "42"
    outcome = await warm_run(pooled, "bash", 'echo "warm $PWD"\n')
    assert outcome.verdict is Verdict.SUCCESS and outcome.result_json == '"warm /job"'


@pytest.mark.parametrize("count", [2, 40], ids=["on the loop", "on a thread"])
async def test_a_warm_jobs_files_are_written_into_its_sandbox_as_its_user(pooled, count):
    """The service writes a warm sandbox's files into its tmpfs at the hand-over: a few
    on its event loop, many on a thread; the job sees them all, with their modes, as its."""
    files = tuple(
        JobFile(f"data/{i % 3}/f{i}.txt", f"content {i}".encode(), executable=i == 1)
        for i in range(count)
    )
    code = (
        "import os\n"
        "def main():\n"
        "    found = {}\n"
        "    for where, _, names in os.walk('data'):\n"
        "        for name in names:\n"
        "            path = os.path.join(where, name)\n"
        "            st = os.stat(path)\n"
        "            assert st.st_uid == os.getuid(), (path, st.st_uid)\n"
        "            found[name] = [open(path).read(), bool(st.st_mode & 0o100)]\n"
        "    return found\n"
    )
    outcome = await warm_run(pooled, "python", code, files)
    assert outcome.verdict is Verdict.SUCCESS, outcome
    assert json.loads(outcome.result_json) == {
        f"f{i}.txt": [f"content {i}", i == 1] for i in range(count)
    }


async def test_the_jobs_memory_limit_applies_not_the_pools(pooled):
    code = "def main():\n    x = bytearray(300 << 20)\n    return len(x)\n"
    outcome = await warm_run(pooled, "python", code, memory_bytes=64 << 20)
    assert outcome.verdict is Verdict.MEMORY_LIMIT, outcome


async def test_the_jobs_cpu_limit_applies_and_counts_from_the_hand_over(pooled):
    code = "def main():\n    while True:\n        pass\n"
    outcome = await warm_run(pooled, "python", code, cpu_time_ms=300)
    assert outcome.verdict is Verdict.CPU_LIMIT, outcome
    used = outcome.usage.user_cpu_ms + outcome.usage.system_cpu_ms
    assert 300 <= used < 3000, outcome.usage


async def test_the_jobs_wall_limit_applies_from_the_hand_over(pooled):
    outcome = await warm_run(pooled, "bash", "sleep 30\n", wall_time_ms=300)
    assert outcome.verdict is Verdict.TIMEOUT, outcome
    assert outcome.usage.wall_time_ms < 3000


async def test_the_jobs_process_limit_applies_not_the_pools(pooled):
    code = "for i in $(seq 40); do sleep 5 & done\nwait\n"
    outcome = await warm_run(pooled, "bash", code, processes=8, wall_time_ms=3000)
    assert outcome.verdict in (Verdict.PROCESS_LIMIT, Verdict.ERROR), outcome
    assert outcome.usage.processes <= 8


async def test_a_trivial_warm_job_is_billed_only_its_own_time(pooled):
    outcome = await warm_run(pooled, "python", "def main():\n    return 1\n")
    # The interpreter's start happened before the hand-over: not this job's.
    assert outcome.usage.user_cpu_ms + outcome.usage.system_cpu_ms < 1000
    assert outcome.usage.phases.sandbox_setup_ms < 1000


async def test_two_warm_jobs_in_a_row_see_nothing_of_each_other(pooled):
    plant = (
        "import os\n"
        "def main():\n"
        "    open('/tmp/planted', 'w').write('secret')\n"
        "    open('/job/planted', 'w').write('secret')\n"
        "    os.environ['PLANTED'] = '1'\n"
        "    return sorted(os.listdir('/job'))\n"
    )
    first = await warm_run(pooled, "python", plant)
    assert json.loads(first.result_json) == ["main.py", "planted"]
    look = (
        "import os\n"
        "def main():\n"
        "    return [os.path.exists('/tmp/planted'), os.path.exists('/job/planted'),\n"
        "            'PLANTED' in os.environ,\n"
        "            sorted(os.listdir('/tmp')), sorted(os.listdir('/job'))]\n"
    )
    second = await warm_run(pooled, "python", look)
    assert json.loads(second.result_json) == [False, False, False, [], ["main.py"]]


async def test_a_job_with_its_own_environment_starts_cold(pooled):
    await warm_run(pooled, "bash", "true\n")
    outcome = await pooled.run(
        dataclasses.replace(job("bash", 'echo "$GREETING"\n'), env={"GREETING": "hi"})
    )
    assert outcome.verdict is Verdict.SUCCESS and outcome.result_json == '"hi"'
    assert not outcome.warm_sandbox


async def test_the_jobs_cpu_quota_applies_not_the_pools(pooled):
    code = "for i in 1 2 3 4; do ( while :; do :; done ) & done\nwait\n"
    outcome = await warm_run(pooled, "bash", code, wall_time_ms=1500, cpu_millicores=250)
    assert outcome.verdict is Verdict.TIMEOUT, outcome
    # A quarter of a core for 1.5 s: at most ~0.4 s of CPU; without the quota, up to 3 s.
    assert outcome.usage.user_cpu_ms + outcome.usage.system_cpu_ms < 1000, outcome.usage


async def test_a_kind_in_demand_gets_more_warm_sandboxes_up_to_the_cap(pooled):
    config = PoolConfig(enabled=True, per_language=4, max_sandboxes=8, idle_s=60)
    pool = WarmPool(pooled.backend, pooled.jobs_dir, Path("/nonexistent"), config, POOL_LIMITS)
    kind = Kind("bash", environment="e" * 64)
    assert pool.target(Kind("bash")) == 1
    assert pool.take(kind) is None  # an arrival: nothing is started without a refill
    assert pool.target(kind) == 0  # a kind of its own environment: none until it recurs
    pool.take(kind)
    assert pool.target(kind) == 1
    for _ in range(98):
        pool.take(kind)
    # 100 arrivals just now, 0.1 s to start one (until one is timed): a burst at its own
    # rate wants more than the cap; the same arrivals over most of the 10 s window, about
    # one while a sandbox starts (R = 100 / 9.5 x 0.1), so 1 + ⌊R + √R⌋; past the window,
    # none are recent.
    assert pool.target(kind) == config.per_language
    assert pool.target(kind, time.monotonic() + 9.5) == 1 + 2
    assert pool.target(kind, time.monotonic() + 11) == 0
    assert pool.target(Kind("bash")) == 1


async def test_a_warm_sandbox_is_ready_only_once_its_program_is_idle(pooled):
    """Ready means its interpreter's start is over, not just begun: a job handed a sandbox
    whose Python still starts would wait for the rest of that start."""
    kind = Kind("python")
    while (stale := pooled.pool.take(kind)) is not None:
        pooled.pool.discard(stale)
    first = await pooled.run(job("python", "def main():\n    return 0\n"))
    assert not first.warm_sandbox  # none waited: its refill starts a fresh one
    for _ in range(15_000):
        if pooled.pool.waiting(kind):
            break
        await asyncio.sleep(0.001)
    warm = pooled.pool.take(kind)
    assert warm is not None
    try:
        # Every thread sleeps: the program blocks on its job message. Ten looks 1 ms apart
        # may catch the supervisor's poll (every 20 ms) once; a starting Python, in most.
        busy = 0
        for _ in range(10):
            busy += warm.sandbox.busy()
            await asyncio.sleep(0.001)
        assert busy <= 2
    finally:
        pooled.pool.discard(warm)


def _cpu_weight(cgroups: Cgroups, pid: int) -> str:
    """The CPU weight of the job group holding `pid`: v1's cpu.shares, v2's cpu.weight."""
    v2 = cgroups.version is Version.V2
    parent = cgroups.parents[""] if v2 else cgroups.parents.get("cpu", cgroups.parents["cpuacct"])
    for group in parent.glob("job-*"):
        if str(pid) in (group / "cgroup.procs").read_text().split():
            weight = group / ("cpu.weight" if v2 else "cpu.shares")
            if not weight.exists():
                pytest.skip("no cpu controller for the job groups here")
            return weight.read_text().strip()
    raise AssertionError(f"no job group holds {pid}")


async def test_a_warm_sandbox_starts_at_the_least_cpu_weight_and_its_job_gets_the_default(
    pooled,
):
    """A sandbox started ahead of demand takes only the CPU running jobs leave; the job
    handed to it runs at the weight of any other job."""
    cgroups = getattr(pooled.backend, "cgroups", None)
    if cgroups is None:
        pytest.skip("no cgroups here")
    background, default = ("1", "100") if cgroups.version is Version.V2 else ("2", "1024")
    async with _taken_bash_sandbox(pooled) as warm:
        pid = await warm.sandbox.started()
        assert _cpu_weight(cgroups, pid) == background
        assert await warm.sandbox.hand_over(JOB_LIMITS)
        assert _cpu_weight(cgroups, pid) == default


async def test_a_warm_sandbox_that_cannot_take_the_jobs_files_is_not_used(pooled):
    """The files are copied in as the jail's user: one it may not read makes the hand-over
    fail (the executor then starts the job cold) instead of a job without its files."""
    async with _taken_bash_sandbox(pooled) as warm:
        assert await warm.sandbox.started()
        secret = warm.workspace.job_dir / "main.sh"
        secret.write_text("echo 1\n")
        secret.chmod(0o000)  # root's, unreadable by the jail's user
        assert not await warm.sandbox.hand_over(JOB_LIMITS)


async def test_a_warm_sandbox_that_died_while_it_waited_is_not_used(pooled):
    """Its program killed while it waits: its supervisor reports the end, and the job it
    was to take goes elsewhere; nothing is written where its tmpfs was."""
    async with _taken_bash_sandbox(pooled) as warm:
        os.kill(await warm.sandbox.started(), signal.SIGKILL)
        end = await warm.sandbox.wait()
        assert end.signal == signal.SIGKILL or end.exit_code != 0, end
        assert not await warm.sandbox.hand_over(JOB_LIMITS)
    outcome = await pooled.run(job("bash", "echo 1\n"))
    assert outcome.verdict is Verdict.SUCCESS and outcome.result_json == "1", outcome


async def test_the_memory_budget_bounds_the_pool(tmp_path):
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-pool-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    backend = open_backend("process", work_dir)
    pool = PoolConfig(enabled=True, per_language=4, max_sandboxes=8, max_memory_bytes=1, idle_s=60)
    executor = Executor(compose(Registry(), backend, work_dir, pool=pool, pool_limits=POOL_LIMITS))
    try:
        for _ in range(6):
            await executor.run(job("bash", "true\n"))
            await asyncio.sleep(0.2)
        # The first is started unmeasured; once it holds memory, the budget admits no other.
        assert executor.pool.size() <= 1
        assert executor.pool.memory_bytes() > 0
    finally:
        await executor.close()
        remove_work_dir(work_dir)


@contextlib.asynccontextmanager
async def _taken_bash_sandbox(executor: Executor) -> AsyncIterator[Warm]:
    """A waiting bash sandbox, taken from the pool once a job made it wanted; discarded
    after the block."""
    kind = Kind("bash")
    await executor.run(job("bash", "true\n"))
    await _waiting(executor, kind)
    warm = executor.pool.take(kind)
    assert warm is not None
    try:
        yield warm
    finally:
        executor.pool.discard(warm)


async def _waiting(executor: Executor, kind: Kind, count: int = 1) -> None:
    """Until `count` warm sandboxes of `kind` wait (or 15 s: the next job then starts cold)."""
    for _ in range(300):
        if executor.pool.waiting(kind) >= count:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("start", ["warm", "cold"])
async def test_the_next_jobs_sandbox_starts_while_a_job_runs(pooled, start):
    """Back to back, a replacement started at a job's end was not ready for the next job
    (20-30 % of them ran cold): it starts once the job's sandbox runs, whether the job
    was handed a warm one or had to start cold."""
    kind = Kind("bash")
    if start == "warm":
        await pooled.run(job("bash", "true\n"))
        await _waiting(pooled, kind)
    else:
        for _ in range(300):  # none waiting or starting: the job must start cold
            while (stale := pooled.pool.take(kind)) is not None:
                pooled.pool.discard(stale)
            if not pooled.pool.size():
                break
            await asyncio.sleep(0.05)
    assert pooled.pool.waiting(kind) == (start == "warm")
    cancel, started = asyncio.Event(), asyncio.Event()

    def on_event(event: JobEvent) -> None:
        if isinstance(event, StartedEvent):
            started.set()

    long_job = job("bash", "sleep 60\n", wall_time_ms=120_000)
    running = asyncio.ensure_future(pooled.run(long_job, on_event, cancel))
    try:
        await asyncio.wait_for(started.wait(), 60)
        for _ in range(300):
            if pooled.pool.waiting(kind) or running.done():
                break
            await asyncio.sleep(0.05)
        assert not running.done(), running.result()
        assert pooled.pool.waiting(kind) == 1
    finally:
        cancel.set()
    outcome = await running
    assert outcome.verdict is Verdict.CANCELLED, outcome
    assert outcome.warm_sandbox is (start == "warm")


async def test_a_full_pool_makes_room_for_the_kind_in_demand(tmp_path):
    """A server running several languages: a burst of one takes the places of the kinds
    whose jobs are older, as many as it wants, not one at a time."""
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-pool-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    backend = open_backend("process", work_dir)
    config = PoolConfig(enabled=True, per_language=2, max_sandboxes=2, idle_s=60)
    executor = Executor(
        compose(Registry(), backend, work_dir, pool=config, pool_limits=POOL_LIMITS)
    )
    pool = executor.pool
    try:
        for language in ("bash", "python"):
            kind = Kind(language)
            for _ in range(30):  # a burst of arrivals (none finds a sandbox): it wants 2
                assert pool.take(kind) is None
            pool.refill(kind, executor.registry.get(language))
            await _waiting(executor, kind, 2)
        assert pool.waiting(Kind("python")) == 2
        assert pool.waiting(Kind("bash")) == 0
    finally:
        await executor.close()
        remove_work_dir(work_dir)


async def test_a_compiled_job_runs_warm_in_a_sandbox_of_its_own_build(pooled):
    code = (
        "using System;\npublic class Script {\n    public static object Main(int a) {\n"
        '        return Environment.GetEnvironmentVariable("GRISTMILL_LANGUAGE") + a;\n    }\n}\n'
    )
    csharp = dataclasses.replace(job("csharp", code), args={"a": 1}, entry_point="Main")
    first = await pooled.run(csharp)
    assert first.verdict is Verdict.SUCCESS and not first.warm_sandbox, first
    assert first.build is not None
    kind = Kind("csharp", build=first.build.key)
    assert not pooled.pool.waiting(kind)  # none for a build until its second job
    again = await pooled.run(csharp)
    assert again.verdict is Verdict.SUCCESS and not again.warm_sandbox, again
    await _waiting(pooled, kind)
    second = await pooled.run(dataclasses.replace(csharp, args={"a": 2}))
    assert second.verdict is Verdict.SUCCESS and second.warm_sandbox, second
    assert second.result_json == '"csharp2"'
    other = await pooled.run(dataclasses.replace(csharp, code=code.replace("+ a", "+ a * 10")))
    assert other.verdict is Verdict.SUCCESS and not other.warm_sandbox, other
    assert other.result_json == '"csharp10"'


async def test_a_program_sized_to_its_memory_takes_only_jobs_with_the_pools_memory(pooled):
    """`memory_variable`: a language whose program sizes itself to the memory limit at its
    start (a JVM's heap) gets a warm sandbox only for a job with the limit it was started
    under; any other language, whatever the job's memory."""
    bash = pooled.registry.get("bash")
    sized = dataclasses.replace(bash, spec=dataclasses.replace(bash.spec, memory_variable=True))
    same = job("bash", "true\n", memory_bytes=POOL_LIMITS.memory_bytes)
    other = job("bash", "true\n", memory_bytes=POOL_LIMITS.memory_bytes // 2)
    assert pooled.pool.fits(same, sized, attached=False)
    assert not pooled.pool.fits(other, sized, attached=False)
    assert pooled.pool.fits(other, bash, attached=False)


async def test_a_java_job_runs_warm_only_under_the_memory_its_jvm_was_sized_for(pooled):
    """A warm JVM's heap was sized for the pool's memory at its start: a job with that limit
    takes it, and sees its own context variables; a job with another limit starts cold."""
    code = (
        "public class Main {\n    public static String main(int a) {\n"
        '        return System.getenv("GRISTMILL_LANGUAGE") + a + " "'
        " + Runtime.getRuntime().maxMemory();\n    }\n}\n"
    )
    sized = job("java", code, memory_bytes=POOL_LIMITS.memory_bytes, processes=64)
    java = dataclasses.replace(sized, args={"a": 1})
    first = await pooled.run(java)
    assert first.verdict is Verdict.SUCCESS and not first.warm_sandbox, first
    assert first.build is not None
    kind = Kind("java", build=first.build.key)
    await pooled.run(java)  # the second job puts the build in demand
    await _waiting(pooled, kind)
    second = await pooled.run(dataclasses.replace(java, args={"a": 2}))
    assert second.verdict is Verdict.SUCCESS and second.warm_sandbox, second
    heap = json.loads(first.result_json).split()[1]
    assert json.loads(second.result_json) == f"java2 {heap}"
    await _waiting(pooled, kind)
    smaller = dataclasses.replace(
        java,
        args={"a": 3},
        limits=dataclasses.replace(java.limits, memory_bytes=POOL_LIMITS.memory_bytes // 2),
    )
    third = await pooled.run(smaller)
    assert third.verdict is Verdict.SUCCESS and not third.warm_sandbox, third
    language, smaller_heap = json.loads(third.result_json).split()
    assert language == "java3" and int(smaller_heap) < int(heap)
    assert pooled.pool.waiting(kind) == 1


async def test_a_job_with_dependencies_runs_warm_in_a_sandbox_of_its_environment(pooled):
    code = (
        '# /// script\n# dependencies = ["six==1.16.0"]\n# ///\n'
        "import os, six\n\ndef main():\n"
        "    return [six.__version__, os.environ['GRISTMILL_LANGUAGE']]\n"
    )
    first = await pooled.run(job("python", code))
    assert first.verdict is Verdict.SUCCESS and not first.warm_sandbox, first
    assert first.environment is not None
    await pooled.run(job("python", code))  # the second job puts the environment in demand
    await _waiting(pooled, Kind("python", environment=first.environment.key))
    second = await pooled.run(job("python", code))
    assert second.verdict is Verdict.SUCCESS and second.warm_sandbox, second
    assert json.loads(second.result_json) == ["1.16.0", "python"]
