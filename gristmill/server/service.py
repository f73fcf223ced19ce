"""The grpc.aio servicer of `gristmill.v1.Runtime`: a thin transport over the job table.

Each handler converts its request (`convert`), asks the job table or the registry,
and converts back. The service's own errors are translated to status codes once,
here, by `_boundary`; a user's program failing is an Outcome, never an RPC error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gristmill import __version__, buildinfo, errors
from gristmill.config import ServerConfig
from gristmill.languages import Registry, Runtime
from gristmill.languages.errors import DependencyFailure
from gristmill.model import Job, Resolution
from gristmill.offload import Offload
from gristmill.server import convert, validate
from gristmill.server.jobs import JobRunner, JobState, JobTable
from gristmill.server.tenants import ANONYMOUS, Tenant, Tenants, current_tenant
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc

__all__ = ["DependencyResolver", "RuntimeServicer", "status_for"]

log = logging.getLogger(__name__)

_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply")

_STATUS: tuple[tuple[type[errors.GristmillError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (errors.LanguageUnavailable, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
)


def status_for(error: Exception) -> grpc.StatusCode:
    """The status code a failure of the service is answered with."""
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _details(error: Exception) -> list[Message]:
    """The google.rpc details a client can act on without parsing the message."""
    if isinstance(error, errors.InvalidRequest):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.detail
        )
        return [error_details_pb2.BadRequest(field_violations=[violation])]
    if isinstance(error, errors.Overloaded):
        full = error_details_pb2.QuotaFailure.Violation(
            subject=error.subject, description=str(error)
        )
        return [error_details_pb2.QuotaFailure(violations=[full])]
    return []


def rich_status(code: grpc.StatusCode, message: str, details: list[Message]) -> grpc.Status:
    """A status with google.rpc details in its trailers (`grpc_status.rpc_status`)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


async def _abort(context: grpc.aio.ServicerContext, error: Exception, rpc: str) -> NoReturn:
    code = status_for(error)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", rpc, exc_info=error)
    message = str(error) if isinstance(error, errors.GristmillError) else "internal error"
    status = rich_status(code, message, _details(error))
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("grpc's context.abort always raises")


def _unary(
    handler: Callable[[_Servicer, _Request, grpc.aio.ServicerContext], Awaitable[_Reply]],
) -> Callable[[_Servicer, _Request, grpc.aio.ServicerContext], Awaitable[_Reply]]:
    """The handler with the service's errors answered as statuses."""

    @functools.wraps(handler)
    async def translated(
        self: _Servicer, request: _Request, context: grpc.aio.ServicerContext
    ) -> _Reply:
        try:
            return await handler(self, request, context)
        except Exception as error:
            await _abort(context, error, handler.__name__)

    return translated


def _streaming(
    handler: Callable[[_Servicer, _Request, grpc.aio.ServicerContext], AsyncGenerator[_Reply]],
) -> Callable[[_Servicer, _Request, grpc.aio.ServicerContext], AsyncGenerator[_Reply]]:
    """The streaming handler with the service's errors answered as statuses."""

    @functools.wraps(handler)
    async def translated(
        self: _Servicer, request: _Request, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[_Reply]:
        try:
            # aclosing: a client going away closes the handler at once, leaving its job.
            async with contextlib.aclosing(handler(self, request, context)) as replies:
                async for reply in replies:
                    yield reply
        except Exception as error:
            await _abort(context, error, handler.__name__)

    return translated


class DependencyResolver(Protocol):
    """What the Resolve RPC needs of `gristmill.deps.DependencyManager`."""

    async def resolve(
        self, runtime: Runtime, code: str, files: Mapping[str, bytes], tenant: str = ""
    ) -> Resolution: ...


class RuntimeServicer(runtime_pb2_grpc.RuntimeServicer):
    def __init__(
        self,
        config: ServerConfig,
        registry: Registry,
        runner: JobRunner,
        table: JobTable,
        offload: Offload,
        resolver: DependencyResolver | None = None,
        tenants: Tenants | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._runner = runner
        self._table = table
        self._offload = offload
        self._resolver = resolver
        self._tenants = tenants or Tenants(config)

    def _tenant(self) -> Tenant:
        """The caller's tenant (`gristmill.server.access` set it), else `anonymous`."""
        tenant = current_tenant.get(None)
        return tenant if tenant is not None else self._tenants.get(ANONYMOUS)

    def _job(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext) -> Job:
        return convert.job_from_proto(
            request.job, self._registry, self._config, context.time_remaining(), self._tenant()
        )

    @_unary
    async def Execute(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> pb.Outcome:
        job = self._job(request, context)
        async with self._table.submit(job, self._tenant().quota) as subscription:
            return convert.outcome_to_proto(await subscription.outcome(), job.tenant)

    @_streaming
    async def ExecuteStream(
        self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[pb.ExecuteEvent]:
        job = self._job(request, context)
        async with self._table.submit(job, self._tenant().quota) as subscription:
            yield convert.accepted_event(job.id, subscription.deduplicated)
            async for event in subscription.events():
                yield convert.event_to_proto(event)
            yield convert.outcome_event(await subscription.outcome(), job.tenant)

    @_unary
    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        job_id = validate.job_id(request.job_id, field="job_id")
        cancelled = await self._table.cancel(job_id, self._tenant().name)
        return pb.CancelResponse(cancelled=cancelled)

    @_unary
    async def GetOutcome(
        self, request: pb.GetOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOutcomeResponse:
        job_id = validate.job_id(request.job_id, field="job_id")
        tenant = self._tenant().name
        state, outcome = self._table.state(tenant, job_id)
        if request.wait and state in (JobState.QUEUED, JobState.RUNNING):
            subscription = self._table.watch(tenant, job_id)
            if subscription is not None:
                async with subscription:
                    await subscription.outcome()
            state, outcome = self._table.state(tenant, job_id)
        return convert.get_outcome_response(state, outcome, tenant)

    @_unary
    async def ListRuntimes(
        self, request: pb.ListRuntimesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRuntimesResponse:
        tenant = self._tenant()
        # Asking each toolchain its version runs a program: keep it off the event loop.
        runtimes = await asyncio.to_thread(
            lambda: [convert.runtime_info(runtime, tenant.operator) for runtime in self._registry]
        )
        databases = [
            pb.DatabaseInfo(name=name, kind=database.kind)
            for name, database in sorted(self._config.databases.items())
        ]
        return pb.ListRuntimesResponse(
            runtimes=runtimes,
            sandbox=convert.sandbox_info(self._runner.sandbox_info(), tenant.operator),
            databases=databases,
            server_version=__version__,
            server_build=await asyncio.to_thread(buildinfo.build),
            caller=convert.caller_info(tenant),
        )

    @_unary
    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeResponse:
        runtime = self._registry.get(request.language, field="language")
        validate.text_size(request.code, self._config.caps.code_bytes, "code")
        entry_point = validate.entry_point(
            request.entry_point, runtime.spec.default_entry_point, field="entry_point"
        )
        schema = await self._offload.plugin_call(
            runtime, "describe", len(request.code), request.code, entry_point
        )
        return pb.DescribeResponse(
            parameters_schema_json=json.dumps(schema), entry_point=entry_point
        )

    @_unary
    async def Resolve(
        self, request: pb.ResolveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveResponse:
        if self._resolver is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server resolves nothing")
        assert self._resolver is not None
        runtime = self._registry.get(request.language, field="language")
        validate.text_size(request.code, self._config.caps.code_bytes, "code")
        validate.at_most(len(request.files), self._config.caps.files, "files", unit="files")
        source = runtime.spec.source_file
        files = {
            f.path: f.content
            for f in validate.files(convert.job_files(request.files), source, "files")
        }
        # A resolution runs a sandbox with the network: it takes a job slot like any job.
        if self._table.draining:
            raise errors.ShuttingDown("the server is shutting down: it takes no new work")
        ticket = self._table.admission.admit(self._tenant().quota)
        try:
            await ticket.wait_turn(asyncio.Event())
            tenant = self._tenant().name
            resolution = await self._resolver.resolve(runtime, request.code, files, tenant)
        except DependencyFailure as failure:
            return convert.resolve_failure(failure)
        finally:
            ticket.release()
        return convert.resolution_to_proto(resolution)
