"""Remembered resolutions: the same requirements, resolved again within a while, are not.

Without a lockfile a job is resolved before it runs; resolving costs a few hundred
milliseconds and a registry round trip even when the environment is already built.
So a lockfile is kept for `ttl_s` under a key of everything that decided it (the
requirements, the interpreter, the resolver and its version, the registries, the
source-build policy), and concurrent jobs with one key resolve once. The cost is that
a package released meanwhile is picked up only when the entry expires; the lockfile
is returned with every outcome, so a run stays replayable exactly either way.
Resolutions that failed are never remembered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gristmill.deps.key import SCHEMA_VERSION, canonical_digest, host_platform
from gristmill.model import Lockfile

__all__ = ["ResolutionKey", "Resolutions"]


@dataclass(frozen=True)
class ResolutionKey:
    language: str
    toolchain_version: str
    resolver: str
    resolver_version: str
    index_urls: tuple[str, ...]
    allow_source_builds: bool
    # The requirements handed to the resolver, sorted: their order decides nothing.
    requirements: tuple[str, ...]
    # Whose resolution it is: "" for every tenant's (`DependencyManager._partition`).
    partition: str = ""
    platform: str = field(default_factory=host_platform)
    schema_version: int = SCHEMA_VERSION

    def digest(self) -> str:
        return canonical_digest(self)


class Resolutions:
    """Lockfiles by resolution key, each for `ttl_s` seconds (0 remembers nothing)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._done: dict[str, tuple[float, Lockfile]] = {}
        self._running: dict[str, asyncio.Future[Lockfile]] = {}

    async def get(
        self, key: ResolutionKey, resolve: Callable[[], Awaitable[Lockfile]]
    ) -> tuple[Lockfile, bool]:
        """The lockfile for `key` and whether it was remembered; `resolve` makes a new one."""
        digest = key.digest()
        now = self._clock()
        remembered = self._done.get(digest)
        if remembered is not None and remembered[0] > now:
            return remembered[1], True
        running = self._running.get(digest)
        if running is not None:
            return await asyncio.shield(running), True
        future: asyncio.Future[Lockfile] = asyncio.ensure_future(resolve())
        # Seen even if every caller went away before the end: no "never retrieved" noise.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._running[digest] = future
        try:
            lockfile = await asyncio.shield(future)
        finally:
            del self._running[digest]
        self._forget_expired(now)
        if self._ttl_s > 0:
            self._done[digest] = (now + self._ttl_s, lockfile)
        return lockfile, False

    def _forget_expired(self, now: float) -> None:
        for digest in [d for d, (expires, _) in self._done.items() if expires <= now]:
            del self._done[digest]
