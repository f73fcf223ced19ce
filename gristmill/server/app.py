"""Assembles and runs the gRPC server: registry, sandbox backend, executor, job table, servicer.

`start` is the composition root: every part is built once, here (the executor's through
`gristmill.jobs.parts.compose`, handed the server's one `Offload`), and handed in.

`start` runs it on the caller's asyncio loop; `BackgroundServer` runs it on a loop of
its own in a daemon thread, for synchronous callers (`gristmill run`, tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gristmill.config import ServerConfig
from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.languages import Registry
from gristmill.model import MAX_MESSAGE_BYTES
from gristmill.observability import Telemetry
from gristmill.offload import Offload
from gristmill.server.access import AccessInterceptor, Authenticator, server_credentials
from gristmill.server.admission import Admission
from gristmill.server.jobs import JobRunner, JobTable
from gristmill.server.service import RuntimeServicer
from gristmill.server.tenants import Tenants
from gristmill.v1 import runtime_pb2, runtime_pb2_grpc

__all__ = ["BackgroundServer", "Server", "start"]

_T = TypeVar("_T")

log = logging.getLogger("gristmill.server")

SERVICE_NAME = runtime_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name

_DELIVERY_GRACE_S = 5.0
"""After the drain, how long calls still have to deliver their outcomes."""


class Server:
    """A running server; `address` is the "host:port" it is bound to."""

    def __init__(
        self,
        server: grpc.aio.Server,
        address: str,
        table: JobTable,
        executor: Executor | None,
        offload: Offload,
        telemetry: Telemetry,
        health_servicer: health.aio.HealthServicer,
        drain_grace_s: float,
    ) -> None:
        self._server = server
        self.address = address
        self._table = table
        self._executor = executor
        self._offload = offload
        self.telemetry = telemetry
        self._health = health_servicer
        self._drain_grace_s = drain_grace_s
        self._hurry = asyncio.Event()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    def hurry(self) -> None:
        """Ends a drain's grace now: the jobs still running are cancelled."""
        self._hurry.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains, then stops: health answers NOT_SERVING at once, new jobs are refused
        with UNAVAILABLE, jobs in flight get `grace_s` (default `drain_grace_s`) to
        finish, the rest are cancelled (their callers get CANCELLED outcomes); then the
        port closes and the sandbox backend with it."""
        grace_s = self._drain_grace_s if grace_s is None else grace_s
        await self._health.enter_graceful_shutdown()
        admission = self._table.admission
        log.info(
            "server draining",
            extra={"running": admission.running, "queued": admission.queued, "grace_s": grace_s},
        )
        cancelled = await self._table.drain(grace_s, self._hurry)
        log.info("server drained", extra={"cancelled_after_grace": cancelled})
        # The calls of cancelled jobs have their outcomes: a moment to send them.
        await self._server.stop(_DELIVERY_GRACE_S)
        if self._executor is not None:
            await self._executor.close()
        self._offload.close()
        log.info("server stopped", extra={"address": self.address})
        self.telemetry.close()


async def start(
    config: ServerConfig,
    runner: JobRunner | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    telemetry: Telemetry | None = None,
) -> Server:
    """A running server for `config`; `runner` replaces the real executor (tests only;
    such a server answers Resolve with UNIMPLEMENTED); `interceptors` see every call
    (`gristmill serve --idle-exit-s` counts them); `telemetry` replaces the one
    `config.telemetry` describes (tests: an in-memory span exporter)."""
    tenants = Tenants(config)
    # Before anything costly: a server that must not start fails here, at once.
    access = AccessInterceptor(Authenticator(config, tenants))
    telemetry = telemetry or Telemetry(config.telemetry)
    registry = Registry(config.runtimes_dir, config.profiles_dir)
    executor = None
    resolver = None
    offload = Offload(config.runtimes_dir, config.profiles_dir)
    if runner is None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
        backend = open_backend(
            config.sandbox_backend, config.work_dir, config.pool.fork_interpreters
        )
        parts = compose(
            registry,
            backend,
            config.work_dir,
            config.deps,
            config.caps,
            config.pool,
            config.pool_limits,
            config.databases,
            config.network,
            offload,
        )
        executor = Executor(parts)
        if config.deps.prime_at_start:
            await executor.builds.prime_all(runtime for runtime in registry if runtime.available)
        runner, resolver = executor, executor.deps
    table = JobTable(
        runner,
        Admission(config.max_concurrent_jobs, config.queue_capacity),
        config.recent_jobs_ttl_s,
        config.caps.recent_jobs_bytes,
        telemetry.watch,
    )
    server = grpc.aio.server(
        interceptors=[access, *telemetry.interceptors(), *interceptors],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    servicer = RuntimeServicer(config, registry, runner, table, offload, resolver, tenants)
    runtime_pb2_grpc.add_RuntimeServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    pool = executor.pool if executor is not None else None
    telemetry.serve_metrics(table.admission, pool, [runtime.name for runtime in registry])
    credentials = server_credentials(config.auth)
    if credentials is None:
        port = server.add_insecure_port(config.address)
    else:
        port = server.add_secure_port(config.address, credentials)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    address = config.address
    if not address.startswith("unix:"):
        address = f"{address.rpartition(':')[0]}:{port}"
    log.info(
        "server started",
        extra={
            "address": address,
            "sandbox": runner.sandbox_info().backend,
            "max_concurrent_jobs": config.max_concurrent_jobs,
            "queue_capacity": config.queue_capacity,
            "warm_pool": config.pool.enabled,
            **telemetry.describe(),
        },
    )
    return Server(
        server, address, table, executor, offload, telemetry, health_servicer, config.drain_grace_s
    )


class BackgroundServer:
    """`with BackgroundServer(config) as address:` a server on its own loop and thread."""

    def __init__(
        self,
        config: ServerConfig,
        runner: JobRunner | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._config = config
        self._runner = runner
        self._telemetry = telemetry
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gristmill-server", daemon=True
        )
        self._server: Server | None = None

    def __enter__(self) -> str:
        self._thread.start()
        try:
            self._server = self._call(start(self._config, self._runner, telemetry=self._telemetry))
        except BaseException:
            self._shut_down()
            raise
        return self._server.address

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._call(self._server.stop(grace_s=1.0))
        self._shut_down()

    def _shut_down(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(
            coroutine, self._loop
        )
        return future.result()
