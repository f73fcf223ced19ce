"""Which server runs a job: of those that run its language and have the labels it
requires, one reachable with the most free room; and what the worker may claim (the
languages and labels its servers have between them), told to the queue so that a job
no live worker can run is marked as such instead of failed."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg

from gristmill.client import AsyncClient, RetryPolicy
from gristmill.credentials import Credentials
from gristmill.queue.database import Database
from gristmill.queue.records import JobRecord

__all__ = ["Routes", "Target", "channel_target", "parse_target"]

log = logging.getLogger(__name__)


def parse_target(text: str) -> tuple[str, frozenset[str]]:
    """A `--target`: "host:port" (or one DNS name, or a gRPC URI), then optionally
    "=label,label": the labels that server has, which jobs' `tags` may require."""
    address, _, labels = text.partition("=")
    return address, frozenset(label for label in labels.split(",") if label)


def channel_target(address: str) -> str:
    """The gRPC target of one server: a URI as is; a name (or IP) through `dns:///`,
    which spreads calls over every address of a name (round_robin)."""
    if "://" in address or address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    return f"dns:///{address}"


@dataclass(eq=False)
class Target:
    """A server (or one name of several) and what this worker knows of it."""

    address: str
    labels: frozenset[str]
    client: AsyncClient
    languages: frozenset[str] | None = None  # None: not reached yet (runs anything)
    capacity: int = 0  # its slots plus queue places for us (0: not known)
    in_flight: int = 0
    down_until: float = 0.0  # it failed as unreachable: others first until then

    def runs(self, job: JobRecord) -> bool:
        known = self.languages is None or job.language in self.languages
        return known and set(job.tags) <= self.labels

    def load(self) -> float:
        return self.in_flight / self.capacity if self.capacity else float(self.in_flight)


class Routes:
    """The worker's servers."""

    def __init__(self) -> None:
        self.targets: list[Target] = []

    def connect(
        self, targets: Sequence[str], credentials: Credentials, client: AsyncClient | None
    ) -> None:
        """A client for each `--target` (or `client` for all: a bench's instant target)."""
        # Not waiting for a server to come back: the queue retries with its own backoff,
        # routed to the other servers meanwhile.
        retry = RetryPolicy(wait_for_ready=False)
        options: list[tuple[str, Any]] = [
            *retry.channel_options(),
            ("grpc.lb_policy_name", "round_robin"),
        ]
        for text in targets:
            address, labels = parse_target(text)
            if client is None:
                channel = credentials.aio_channel(channel_target(address), options)
                own = AsyncClient("", retry=retry, channel=channel, credentials=credentials)
            self.targets.append(Target(address, labels, client or own))

    def route(self, job: JobRecord) -> Target | None:
        """The server for a job: of those that run its language and have its labels, one
        reachable with the most free room (random among equals); None when none runs it."""
        able = [target for target in self.targets if target.runs(job)]
        now = time.monotonic()
        candidates = [target for target in able if target.down_until <= now] or able
        random.shuffle(candidates)
        return min(candidates, key=Target.load, default=None)

    def can_run(self) -> tuple[list[str] | None, list[str]]:
        """The languages (None: any, while a server is not reached) and labels the
        servers have between them: what the claim may take."""
        labels = sorted(set().union(*(t.labels for t in self.targets)))
        languages: set[str] = set()
        for target in self.targets:
            if target.languages is None:
                return None, labels
            languages |= target.languages
        return sorted(languages), labels

    def clients(self) -> list[AsyncClient]:
        """Each server's client once (a bench may give all one)."""
        return list({id(t.client): t.client for t in self.targets}.values())

    async def keep_discovering(self, db: Database, worker_id: str, every_s: float) -> None:
        """`discover` every `every_s`, until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            await self.discover(db, worker_id, every_s)

    async def discover(self, db: Database, worker_id: str, every_s: float) -> None:
        """Asks each server not known yet what it runs (`ListRuntimes`), then tells the
        queue (`gristmill.routes`), which marks the jobs no worker (seen within six
        rounds of `every_s`) can run."""

        async def ask(target: Target) -> None:
            try:
                info = await target.client.list_runtimes(timeout_s=5)
            except grpc.RpcError as error:
                log.info("server %s not reached (%s)", target.address, error.code().name)
                return
            target.languages = frozenset(r.language for r in info.runtimes if r.available)
            target.capacity = info.caller.max_concurrent_jobs + info.caller.max_queued_jobs

        await asyncio.gather(*(ask(t) for t in self.targets if t.languages is None))
        languages, labels = self.can_run()
        try:
            marked = await db.fetch(
                "select gristmill.routes(%s, %s, %s, %s * interval '1 second')",
                (worker_id, languages, labels, 6 * every_s),
            )
        except psycopg.Error:
            log.exception("discovery failed")
            return
        if marked and marked[0][0]:
            log.info("%d queued job(s) marked or unmarked as no worker's to run", marked[0][0])
