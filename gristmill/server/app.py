"""Assembles and runs the gRPC server: registry, sandbox backend, executor, job table, servicer.

`start` runs it on the caller's asyncio loop; `BackgroundServer` runs it on a loop of
its own in a daemon thread, for synchronous callers (`gristmill run`, tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
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
from gristmill.languages import Registry
from gristmill.model import MAX_MESSAGE_BYTES
from gristmill.offload import Offload
from gristmill.server.admission import Admission
from gristmill.server.jobs import JobRunner, JobTable
from gristmill.server.service import RuntimeServicer
from gristmill.v1 import runtime_pb2, runtime_pb2_grpc

__all__ = ["BackgroundServer", "Server", "start"]

_T = TypeVar("_T")

SERVICE_NAME = runtime_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name


class Server:
    """A running server; `address` is the "host:port" it is bound to."""

    def __init__(
        self,
        server: grpc.aio.Server,
        address: str,
        table: JobTable,
        executor: Executor | None,
        offload: Offload,
    ) -> None:
        self._server = server
        self.address = address
        self._table = table
        self._executor = executor
        self._offload = offload

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stops taking calls, cancels jobs still running after `grace_s`, closes the sandbox."""
        await self._server.stop(grace_s)
        await self._table.close()
        if self._executor is not None:
            await self._executor.close()
        self._offload.close()


async def start(
    config: ServerConfig,
    runner: JobRunner | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> Server:
    """A running server for `config`; `runner` replaces the real executor (tests only;
    such a server answers Resolve with UNIMPLEMENTED); `interceptors` see every call
    (`gristmill serve --idle-exit-s` counts them)."""
    registry = Registry(config.runtimes_dir, config.profiles_dir)
    executor = None
    resolver = None
    offload = Offload(config.runtimes_dir, config.profiles_dir)
    if runner is None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
        backend = open_backend(config.sandbox_backend, config.work_dir)
        # Warm sandboxes wait under the default memory and the maximum times: a job's
        # own limits replace them at its hand-over.
        pool_limits = dataclasses.replace(
            config.default_limits,
            wall_time_ms=config.max_limits.wall_time_ms,
            cpu_time_ms=config.max_limits.cpu_time_ms,
            processes=config.max_limits.processes,
        )
        executor = Executor(
            registry,
            backend,
            config.work_dir,
            config.deps,
            config.caps,
            config.pool,
            pool_limits,
            config.databases,
            config.network,
        )
        offload = executor.offload
        if config.deps.prime_at_start:
            await executor.builds.prime_all(runtime for runtime in registry if runtime.available)
        runner, resolver = executor, executor.deps
    table = JobTable(
        runner,
        Admission(config.max_concurrent_jobs, config.queue_capacity),
        config.recent_jobs_ttl_s,
        config.caps.recent_jobs_bytes,
    )
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    servicer = RuntimeServicer(config, registry, runner, table, offload, resolver)
    runtime_pb2_grpc.add_RuntimeServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(config.address)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    if config.address.startswith("unix:"):
        return Server(server, config.address, table, executor, offload)
    host = config.address.rpartition(":")[0]
    return Server(server, f"{host}:{port}", table, executor, offload)


class BackgroundServer:
    """`with BackgroundServer(config) as address:` a server on its own loop and thread."""

    def __init__(self, config: ServerConfig, runner: JobRunner | None = None) -> None:
        self._config = config
        self._runner = runner
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gristmill-server", daemon=True
        )
        self._server: Server | None = None

    def __enter__(self) -> str:
        self._thread.start()
        try:
            self._server = self._call(start(self._config, self._runner))
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
