"""Prometheus metrics: what the service counted, and its state read at each scrape.

The counters and histograms are module-level (prometheus-client's own idiom) in the
default registry, beside the process collector's CPU and memory of the server; the
state of one server (its job slots, queue and warm sandboxes) is read from it when
scraped, by a collector registered with that server's endpoint only. README.md
("Operations: logs, metrics, traces") lists every metric.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "BUILDS",
    "CACHE_BYTES",
    "CACHE_EVICTIONS",
    "CACHE_LOOKUPS",
    "INTERNAL_ERRORS",
    "JOBS",
    "JOB_SECONDS",
    "JOB_STARTS",
    "PHASE_SECONDS",
    "RESOLVES",
    "SANDBOX_SETUP_FAILURES",
    "MetricsEndpoint",
    "ServerState",
    "counted",
]

# From a warm Bash job's few milliseconds to a cold Java build's minutes.
_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

JOBS = Counter(
    "gristmill_jobs",
    "Jobs finished, by language, verdict and tenant",
    ["language", "verdict", "tenant"],
)
JOB_SECONDS = Histogram(
    "gristmill_job_seconds",
    "A job's time in the service, from submission to its outcome",
    ["language"],
    buckets=_BUCKETS_S,
)
PHASE_SECONDS = Histogram(
    "gristmill_job_phase_seconds",
    "The server's own time per job phase: queued, resolve, install, build, prepare, "
    "sandbox_setup, run",
    ["language", "phase"],
    buckets=_BUCKETS_S,
)
JOB_STARTS = Counter(
    "gristmill_job_sandbox_starts",
    "Jobs whose sandbox ran them, by how it started: warm (pre-started) or cold",
    ["language", "start"],
)
SANDBOX_SETUP_FAILURES = Counter(
    "gristmill_sandbox_setup_failures",
    "Sandboxes that could not be set up: jobs ended SANDBOX_ERROR (cold), warm sandboxes "
    "that failed to start (warm)",
    ["language", "start"],
)
INTERNAL_ERRORS = Counter(
    "gristmill_internal_errors", "Jobs that ended with the service's own failure", ["language"]
)
CACHE_LOOKUPS = Counter(
    "gristmill_cache_lookups",
    "Environments (installed dependencies) and build outputs asked of their cache: hit "
    "when it had them, miss when the job's request built them",
    ["cache", "result"],
)
CACHE_BYTES = Gauge("gristmill_cache_bytes", "Bytes a cache holds, as of its last build", ["cache"])
CACHE_EVICTIONS = Counter(
    "gristmill_cache_evictions", "Entries removed from a cache to fit its budget", ["cache"]
)
RESOLVES = Counter(
    "gristmill_resolves",
    "Dependency resolutions run (a lockfile remembered from an earlier one is not one)",
    ["language", "result"],
)
BUILDS = Counter(
    "gristmill_builds",
    "Compilations run (a build output the cache had is not one)",
    ["language", "result"],
)


@contextlib.contextmanager
def counted(counter: Counter, language: str) -> Iterator[None]:
    """Counts the block under `result="ok"`, or `result="failed"` if it raises."""
    try:
        yield
    except BaseException:
        counter.labels(language, "failed").inc()
        raise
    counter.labels(language, "ok").inc()


class Admission(Protocol):
    """What the state collector reads of `gristmill.server.admission.Admission`."""

    running: int
    max_running: int
    max_queued: int

    @property
    def queued(self) -> int: ...


class WarmSandboxes(Protocol):
    """What the state collector reads of `gristmill.jobs.pool.WarmPool`."""

    def ready(self, language: str) -> int: ...

    def size(self) -> int: ...

    def memory_bytes(self, language: str | None = None) -> int: ...


class ServerState(Collector):
    """One server's jobs running and queued, its slots, its warm sandboxes, at scrape time."""

    def __init__(
        self, admission: Admission, pool: WarmSandboxes | None, languages: Sequence[str]
    ) -> None:
        self._admission = admission
        self._pool = pool
        self._languages = tuple(languages)

    def collect(self) -> Iterable[Any]:
        admission = self._admission
        for name, text, value in (
            ("gristmill_jobs_running", "Jobs holding a slot now", admission.running),
            ("gristmill_jobs_queued", "Jobs waiting for a slot now", admission.queued),
            ("gristmill_job_slots", "Jobs that may run at once", admission.max_running),
            ("gristmill_queue_capacity", "Jobs that may wait for a slot", admission.max_queued),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        if self._pool is None:
            return
        ready = GaugeMetricFamily(
            "gristmill_warm_sandboxes_ready",
            "Warm sandboxes waiting for a job, by language",
            labels=["language"],
        )
        for language in self._languages:
            ready.add_metric([language], self._pool.ready(language))
        yield ready
        yield GaugeMetricFamily(
            "gristmill_warm_sandboxes",
            "Warm sandboxes held, ready or starting",
            value=self._pool.size(),
        )
        yield GaugeMetricFamily(
            "gristmill_warm_sandboxes_memory_bytes",
            "Memory the waiting warm sandboxes hold (the pool's budget counts it)",
            value=self._pool.memory_bytes(),
        )


class _Shared(Collector):
    """The default registry's metrics, served again by a server's own registry."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


class MetricsEndpoint:
    """The `/metrics` HTTP endpoint of one server, on a port of its own, in a thread."""

    def __init__(self, address: str, state: ServerState) -> None:
        # The `*_created` timestamp of every series doubles a scrape for nothing.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        host, _, port = address.rpartition(":")
        self.registry = CollectorRegistry()
        self.registry.register(_Shared())
        self.registry.register(state)
        served: tuple[WSGIServer, threading.Thread] = _start_http_server(
            int(port), host.strip("[]") or "0.0.0.0", registry=self.registry
        )
        self._server, self._thread = served
        self.address = f"{host}:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
