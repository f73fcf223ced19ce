"""Warm sandboxes: started ahead of demand with their program waiting, one job each.

A job's latency then holds no sandbox set-up and no interpreter start: the executor
hands the job to a sandbox whose wrapper already waits for its job message on fd 4
(runtimes/PROTOCOL.md), and the pool starts a fresh one in the background. A warm
sandbox has seen no other job; it runs one and is destroyed like any other. Until its
hand-over (`Sandbox.hand_over`) it runs under the pool's limits; from then on under
the job's, with clocks and accounting that start at the hand-over.

Demand decides what is kept warm: a language gets `per_language` sandboxes from its
first job on, within `max_sandboxes` in all, and loses them after `idle_s` without
a job. Network-on jobs have warm sandboxes of their own, apart: started with the
server's egress policy in a network namespace of their own, the job's bytes cap coming
with the hand-over. A job that no warm sandbox fits (dependencies, a build, its own
environment variables, a network allow list or connections cap of its own) is started
cold, as is any job while the pool is empty.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from gristmill.config import NetworkConfig, PoolConfig
from gristmill.isolation.backend import Sandbox, SandboxBackend, StopReason
from gristmill.jobs.mounts import job_plan
from gristmill.jobs.workspace import Workspace
from gristmill.languages import Runtime
from gristmill.model import Job, Limits

__all__ = ["Warm", "WarmPool"]

log = logging.getLogger(__name__)

RETRY_AFTER_S = 30.0
"""A language whose warm sandbox failed to start is not started warm again for this long."""


Kind = tuple[str, bool]
"""What a warm sandbox is for: a language, with the network or without."""


@dataclass(frozen=True)
class Warm:
    """A started sandbox waiting for its job, and the workspace its files go into."""

    sandbox: Sandbox
    workspace: Workspace
    language: str


class WarmPool:
    def __init__(
        self,
        backend: SandboxBackend,
        jobs_dir: Path,
        runtime_dirs: Path,
        config: PoolConfig,
        limits: Limits,
        network: NetworkConfig | None = None,
    ) -> None:
        self._backend = backend
        self._jobs_dir = jobs_dir
        self._runtime_dirs = runtime_dirs
        self.config = config
        # What a warm sandbox runs under until its hand-over: generous backstops.
        self._limits = dataclasses.replace(limits, network=False)
        # The server's egress policy, for warm network-on sandboxes; None: none of them.
        self._network = network
        self._ready: dict[Kind, collections.deque[Warm]] = collections.defaultdict(
            collections.deque
        )
        self._starting: collections.Counter[Kind] = collections.Counter()
        self._last_job: dict[Kind, float] = {}
        self._broken_until: dict[Kind, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    def fits(self, job: Job, needs_mounts: bool) -> bool:
        """Whether a warm sandbox could run `job`: one with nothing of its own to mount
        (an environment, a build), no environment variables of its own and, with the
        network, the server's policy as it is (its ruleset was loaded at the start)."""
        if not self.config.enabled or needs_mounts or job.env:
            return False
        if not job.limits.network:
            return True
        return (
            self._network is not None
            and not job.network_allow
            and job.limits.network_connections == self._limits.network_connections
        )

    def take(self, runtime: Runtime, network: bool = False) -> Warm | None:
        """A warm sandbox of `runtime`'s, or None. Call `refill` once the job is over."""
        if not self.config.enabled or self._closed:
            return None
        kind = (runtime.name, network)
        self._last_job[kind] = time.monotonic()
        ready = self._ready[kind]
        return ready.popleft() if ready else None

    def refill(self, runtime: Runtime, network: bool = False) -> None:
        """Starts what `runtime` lacks of its warm sandboxes, in the background.

        Called after a job rather than when it is taken: a sandbox starting beside the
        job would take CPU from it on the machine the pool is meant to make faster.
        """
        if self.config.enabled and not self._closed and (runtime.name, network) in self._last_job:
            self._refill(runtime, network)
            self._ensure_reaper()

    def discard(self, warm: Warm) -> None:
        """Stops a warm sandbox that will run no job, off the caller's path."""
        self._spawn(self._destroy(warm))

    def ready(self, language: str, network: bool = False) -> int:
        """How many warm sandboxes of `language` wait for a job now."""
        return len(self._ready.get((language, network), ()))

    def size(self) -> int:
        return sum(len(ready) for ready in self._ready.values()) + sum(self._starting.values())

    def _refill(self, runtime: Runtime, network: bool) -> None:
        kind = (runtime.name, network)
        if time.monotonic() < self._broken_until.get(kind, 0.0):
            return
        have = len(self._ready[kind]) + self._starting[kind]
        room = self.config.max_sandboxes - self.size()
        for _ in range(max(0, min(self.config.per_language - have, room))):
            self._starting[kind] += 1
            self._spawn(self._start(runtime, network))

    def _spawn(self, coroutine: collections.abc.Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, runtime: Runtime, network: bool) -> None:
        kind = (runtime.name, network)
        workspace: Workspace | None = None
        try:
            uid, gid = runtime.profile.uid, runtime.profile.gid
            workspace = await asyncio.to_thread(Workspace.empty, self._jobs_dir, uid, gid)
            plan = job_plan(
                runtime,
                self._runtime_dirs / runtime.name,
                workspace,
                runtime.spec.run,
                {},
                self._limits,
                None,
                None,
            )
            plan = dataclasses.replace(plan, warm=True)
            if network and self._network is not None:
                egress = await asyncio.to_thread(self._network.egress)
                limits = dataclasses.replace(plan.limits, network=True)
                plan = dataclasses.replace(plan, limits=limits, egress=egress)
            sandbox = await self._backend.start(plan)
            warm = Warm(sandbox, workspace, runtime.name)
            if not await sandbox.started() or self._closed:
                self._broken_until[kind] = time.monotonic() + RETRY_AFTER_S
                await self._destroy(warm)
                return
            self._ready[kind].append(warm)
        except Exception:
            log.exception("a warm %s sandbox failed to start", runtime.name)
            self._broken_until[kind] = time.monotonic() + RETRY_AFTER_S
            if workspace is not None:
                await asyncio.to_thread(workspace.remove)
        finally:
            self._starting[kind] -= 1

    @staticmethod
    async def _destroy(warm: Warm) -> None:
        warm.sandbox.stop(StopReason.CANCEL)
        with contextlib.suppress(Exception):
            await warm.sandbox.wait()
        await asyncio.to_thread(warm.workspace.remove)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Stops the warm sandboxes of languages that had no job for `idle_s`."""
        while any(self._ready.values()):
            await asyncio.sleep(max(self.config.idle_s / 4, 0.05))
            now = time.monotonic()
            for kind, ready in self._ready.items():
                if now - self._last_job.get(kind, 0.0) >= self.config.idle_s:
                    while ready:
                        self.discard(ready.popleft())

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
