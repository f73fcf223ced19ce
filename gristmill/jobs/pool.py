"""Warm sandboxes: started ahead of demand with their program waiting, one job each.

A job's latency then holds no sandbox set-up and no interpreter start: the executor
hands the job to a sandbox whose wrapper already waits for its job message on fd 4
(runtimes/PROTOCOL.md), and the pool starts a fresh one in the background while the
job runs. A warm
sandbox has seen no other job; it runs one and is destroyed like any other. Until its
hand-over (`Sandbox.hand_over`) it runs under the pool's limits; from then on under
the job's, with clocks and accounting that start at the hand-over.

Sandboxes are kept per `Kind`: a language, and the installed dependencies and build
output its jobs mount (so a job with dependencies, or of a compiled language, starts
warm too once its kind is in demand). Demand decides how many: a language's kind gets
warm sandboxes from its first job on, one of dependencies or a build from its second,
enough to cover its recent arrival rate while a new one starts (`target`), at most
`per_language`, within `max_sandboxes` and `max_memory_bytes` in all (what idle
sandboxes hold, measured on their cgroups; a full pool stops sandboxes of the least
recently used kinds to make room for a kind in demand), and loses them after `idle_s` without
a job. Network-on jobs are a kind of their own: started with the server's egress policy
in a network namespace of their own, the job's bytes cap coming with the hand-over. A
job that no warm sandbox fits (its own environment variables, a network allow list or
connections cap of its own, a plugin's mounts, a language whose wrapper cannot take its
context from the job message) is started cold, as is any job while its kind has no
sandbox waiting: a job never waits for the pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path

from gristmill.config import NetworkConfig, PoolConfig
from gristmill.deps import EnvironmentCache
from gristmill.isolation.backend import Sandbox, SandboxBackend, StopReason
from gristmill.jobs.mounts import job_plan
from gristmill.jobs.workspace import Workspace
from gristmill.languages import Runtime
from gristmill.model import Job, Limits
from gristmill.observability import metrics

__all__ = ["Kind", "Warm", "WarmPool"]

log = logging.getLogger(__name__)

RETRY_AFTER_S = 30.0
"""A kind whose warm sandbox failed to start is not started warm again for this long."""
DEMAND_WINDOW_S = 10.0
"""Arrivals this recent make a kind's rate."""
SETTLE_STEP_S = 0.005
"""How often a started sandbox is looked at until its program waits for its job."""
SETTLE_MAX_S = 2.0
"""A sandbox whose program never seems to wait (it polls) is taken for ready after this."""
RATE_SPAN_MIN_S = 0.5
"""The shortest span a rate is measured over: two jobs a millisecond apart are no trend."""
FIRST_START_S = 0.1
"""What a kind's sandbox is assumed to take to start until one has been timed."""


async def _settled(sandbox: Sandbox) -> None:
    """Until a started sandbox's program has finished starting and waits for its job: none
    of its threads runs or waits for a CPU, twice in a row. Handed over sooner, its job
    would wait for the rest of its interpreter's start (a Python sandbox taken at once:
    ~5 ms). CPU time alone would not tell: a start held up by a busy machine uses none."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_MAX_S
    idle = 0
    while idle < 2 and loop.time() < deadline:
        await asyncio.sleep(SETTLE_STEP_S)
        idle = 0 if sandbox.busy() else idle + 1


@dataclass(frozen=True)
class Kind:
    """What a warm sandbox is started with besides its language's folder: the installed
    dependencies and the build output its jobs mount, by cache key ("" for none)."""

    language: str
    environment: str = ""
    build: str = ""
    # Network-on: started in a network namespace of its own with the server's policy.
    network: bool = False


@dataclass
class Warm:
    """A started sandbox waiting for its job, and the workspace its files go into."""

    sandbox: Sandbox
    workspace: Workspace
    kind: Kind
    # The leases of its environment and build, held while it waits.
    leases: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    memory_bytes: int = 0


@dataclass
class _Demand:
    """A kind's recent arrivals and how long its sandboxes take to start."""

    arrivals: collections.deque[float] = field(default_factory=collections.deque)
    start_s: float = FIRST_START_S
    last_job: float = 0.0

    def arrived(self, now: float) -> None:
        self.last_job = now
        self.arrivals.append(now)
        self.recent(now)  # drops those out of the window

    def recent(self, now: float) -> int:
        """How many arrivals the window ending `now` holds (older ones are dropped)."""
        while self.arrivals and now - self.arrivals[0] > DEMAND_WINDOW_S:
            self.arrivals.popleft()
        return len(self.arrivals)

    def rate(self, now: float) -> float:
        """Arrivals per second since the first of the window's (the intervals after it,
        over at least half a second): a burst that began a moment ago counts at its own
        rate, not diluted over the whole window, and a lone job makes no rate at all."""
        if not self.recent(now):
            return 0.0
        return (len(self.arrivals) - 1) / max(now - self.arrivals[0], RATE_SPAN_MIN_S)


async def _leased(
    leases: contextlib.AsyncExitStack, cache: EnvironmentCache | None, digest: str
) -> Path | None:
    """The directory of `digest` in `cache`, held until `leases` close; None for none
    (raises if it is gone)."""
    if not digest or cache is None:
        return None
    return await leases.enter_async_context(cache.hold(digest))


class WarmPool:
    def __init__(
        self,
        backend: SandboxBackend,
        jobs_dir: Path,
        runtime_dirs: Path,
        config: PoolConfig,
        limits: Limits,
        environments: EnvironmentCache | None = None,
        builds: EnvironmentCache | None = None,
        network: NetworkConfig | None = None,
    ) -> None:
        self._backend = backend
        self._jobs_dir = jobs_dir
        self._runtime_dirs = runtime_dirs
        self.config = config
        # The caches of the environments and builds warm sandboxes mount, leased from
        # for a sandbox's wait so that neither is evicted under it.
        self._environments = environments
        self._builds = builds
        # What a warm sandbox runs under until its hand-over: generous backstops.
        self._limits = dataclasses.replace(limits, network=False)
        # The server's egress policy, for warm network-on sandboxes; None: none of them.
        self._network = network
        self._ready: dict[Kind, collections.deque[Warm]] = collections.defaultdict(
            collections.deque
        )
        self._starting: collections.Counter[Kind] = collections.Counter()
        self._demand: dict[Kind, _Demand] = collections.defaultdict(_Demand)
        self._broken_until: dict[Kind, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    def fits(self, job: Job, runtime: Runtime, attached: bool) -> bool:
        """Whether a warm sandbox could run `job`: one of a language whose wrapper takes its
        context from the job message, with nothing a plugin mounts for it alone, no
        environment variables of its own, the memory limit the sandbox's program sized itself
        to (`memory_variable`: a JVM's heap is fixed at its start) and, with the network, the
        server's policy as it is (its ruleset was loaded at the start)."""
        if not self.config.enabled or not runtime.spec.message_context or attached or job.env:
            return False
        if runtime.spec.memory_variable and job.limits.memory_bytes != self._limits.memory_bytes:
            return False
        if not job.limits.network:
            return True
        return (
            self._network is not None
            and not job.network_allow
            and job.limits.network_connections == self._limits.network_connections
        )

    def take(self, kind: Kind) -> Warm | None:
        """A warm sandbox of `kind`, or None. Call `refill` once the job's sandbox runs."""
        if not self.config.enabled or self._closed:
            return None
        self._demand[kind].arrived(time.monotonic())
        ready = self._ready[kind]
        if not ready:
            return None
        warm = ready.popleft()
        # The job holds leases of its own on what the sandbox mounts.
        self._spawn(warm.leases.aclose())
        return warm

    def refill(self, kind: Kind, runtime: Runtime) -> None:
        """Starts what `kind` lacks of its warm sandboxes, in the background.

        Called once a job's sandbox runs (handed over, or its cold set-up done), not after
        the job: back to back, a replacement started at the job's end was not ready for
        the next one in 20-30 % of jobs. Starting at the least CPU weight, it takes only
        the CPU the running job leaves; not before the hand-over, whose service-side work
        it would delay.
        """
        if self.config.enabled and not self._closed and kind in self._demand:
            self._refill(kind, runtime)
            self._ensure_reaper()

    def discard(self, warm: Warm) -> None:
        """Stops a warm sandbox that will run no job, off the caller's path."""
        self._spawn(self._destroy(warm))

    def ready(self, language: str, network: bool | None = None) -> int:
        """How many warm sandboxes of `language` (of any kind, or network-on or off ones)
        wait for a job now."""
        return sum(
            len(r)
            for kind, r in self._ready.items()
            if kind.language == language and network in (None, kind.network)
        )

    def waiting(self, kind: Kind) -> int:
        """How many warm sandboxes of `kind` wait for a job now."""
        return len(self._ready.get(kind, ()))

    def size(self) -> int:
        return sum(len(ready) for ready in self._ready.values()) + sum(self._starting.values())

    def memory_bytes(self, language: str | None = None) -> int:
        """What the waiting sandboxes (of `language`, or all) hold, as measured when each
        had started."""
        return sum(
            w.memory_bytes
            for kind, ready in self._ready.items()
            if language in (None, kind.language)
            for w in ready
        )

    def target(self, kind: Kind, now: float | None = None) -> int:
        """How many of `kind` the pool keeps (waiting or starting): one for the next job,
        plus the R arrivals expected while a new one starts (Little's law: rate * start
        time) and a margin of √R for their variance (square-root staffing), rounded down,
        `per_language` at most. Without the margin a client sending jobs back to back
        found a sandbox for 64 % of them, with it for 95 %. A kind of its own dependencies
        or build gets none until its second job: code run once (each of a compiled
        language a kind of its own) would leave a sandbox nobody takes, and its start's
        CPU lost."""
        now = time.monotonic() if now is None else now
        demand = self._demand[kind]
        if (kind.environment or kind.build) and demand.recent(now) < 2:
            return 0
        expected = demand.rate(now) * demand.start_s
        wanted = 1 + math.floor(expected + math.sqrt(expected))
        return min(self.config.per_language, wanted)

    def _refill(self, kind: Kind, runtime: Runtime) -> None:
        now = time.monotonic()
        if now < self._broken_until.get(kind, 0.0):
            return
        have = len(self._ready[kind]) + self._starting[kind]
        wanted = self.target(kind, now) - have
        self._make_room(kind, wanted - (self.config.max_sandboxes - self.size()))
        room = self.config.max_sandboxes - self.size()
        for _ in range(max(0, min(wanted, room))):
            if not self._memory_allows(kind):
                return
            self._starting[kind] += 1
            self._spawn(self._start(kind, runtime))

    def _make_room(self, kind: Kind, places: int) -> None:
        """A full pool gives a kind in demand `places`: as many waiting sandboxes of the
        kinds whose last job is oldest (and older than this one's) are stopped."""
        for _ in range(places):
            waiting = [other for other, ready in self._ready.items() if ready and other != kind]
            if not waiting:
                return
            oldest = min(waiting, key=lambda other: self._demand[other].last_job)
            if self._demand[oldest].last_job >= self._demand[kind].last_job:
                return
            self.discard(self._ready[oldest].popleft())

    def _memory_allows(self, kind: Kind) -> bool:
        """Whether one more sandbox of `kind` (as big as its waiting ones) stays within
        budget.

        With none of its kind waiting its size is unknown, so it starts one at a time: on a
        busy machine, where a start is slow and the demand's estimate high, three went past
        a budget of one. Each start that ends tops its kind up (`_start`)."""
        ready = self._ready[kind]
        if not ready and self._starting[kind]:
            return False
        expected = max((w.memory_bytes for w in ready), default=0)
        starting = sum(self._starting.values()) * expected
        return self.memory_bytes() + starting + expected <= self.config.max_memory_bytes

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, kind: Kind, runtime: Runtime) -> None:
        workspace: Workspace | None = None
        leases = contextlib.AsyncExitStack()
        began = time.monotonic()
        top_up = False
        try:
            environment_dir = await _leased(leases, self._environments, kind.environment)
            build_dir = await _leased(leases, self._builds, kind.build)
            uid, gid = runtime.profile.uid, runtime.profile.gid
            # Three directories: quicker made here than handed to a thread and back.
            workspace = Workspace.empty(self._jobs_dir, uid, gid)
            plan = job_plan(
                runtime,
                self._runtime_dirs / runtime.name,
                workspace,
                runtime.spec.run,
                {},
                self._limits,
                environment_dir,
                build_dir,
            )
            plan = dataclasses.replace(plan, warm=True)
            if kind.network and self._network is not None:
                egress = await asyncio.to_thread(self._network.egress)
                limits = dataclasses.replace(plan.limits, network=True)
                plan = dataclasses.replace(plan, limits=limits, egress=egress)
            sandbox = await self._backend.start(plan)
            warm = Warm(sandbox, workspace, kind, leases)
            started = await sandbox.started()
            if started:
                await _settled(sandbox)
            if not started or self._closed:
                if not self._closed:
                    log.error("a warm %s sandbox failed to start", kind.language)
                    metrics.SANDBOX_SETUP_FAILURES.labels(kind.language, "warm").inc()
                self._broken_until[kind] = time.monotonic() + RETRY_AFTER_S
                await self._destroy(warm)
                return
            warm.memory_bytes = sandbox.memory_bytes()
            demand = self._demand[kind]
            demand.start_s = (demand.start_s + (time.monotonic() - began)) / 2
            self._ready[kind].append(warm)
            top_up = True
        except Exception:
            log.exception("a warm %s sandbox failed to start", kind.language)
            metrics.SANDBOX_SETUP_FAILURES.labels(kind.language, "warm").inc()
            self._broken_until[kind] = time.monotonic() + RETRY_AFTER_S
            await leases.aclose()
            if workspace is not None:
                await asyncio.to_thread(workspace.remove)
        finally:
            self._starting[kind] -= 1
        if top_up and not self._closed:
            self._refill(kind, runtime)

    @staticmethod
    async def _destroy(warm: Warm) -> None:
        warm.sandbox.stop(StopReason.CANCEL)
        with contextlib.suppress(Exception):
            await warm.sandbox.wait()
        await warm.leases.aclose()
        await asyncio.to_thread(warm.workspace.remove)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Stops the warm sandboxes of kinds that had no job for `idle_s`."""
        while any(self._ready.values()):
            await asyncio.sleep(max(self.config.idle_s / 4, 0.05))
            now = time.monotonic()
            for kind, ready in list(self._ready.items()):
                if now - self._demand[kind].last_job >= self.config.idle_s:
                    while ready:
                        self.discard(ready.popleft())
                    if not self._starting[kind]:
                        del self._ready[kind], self._demand[kind]

    async def close(self) -> None:
        """Stops every warm sandbox and waits until they are gone."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for ready in self._ready.values():
            while ready:
                self.discard(ready.popleft())
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
