"""The tenant a job is logged and counted under is the one its call set in `TENANT`
(authentication does; here an interceptor reading a header stands in for it)."""

from __future__ import annotations

import json
from typing import Any

import grpc

from gristmill.observability import TENANT
from gristmill.server import start
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc as pb_grpc
from tests.conftest import FakeRunner

# The generated stub is untyped; held as Any so that calling it is not an untyped call.
RuntimeStub: Any = pb_grpc.RuntimeStub


class TenantFromHeader(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Sets `TENANT` from the `x-tenant` header for the call's handler."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            TENANT.set(str(metadata.get("x-tenant", "default")))
            return await inner(request, context)

        return handler._replace(unary_unary=unary) if inner is not None else handler


async def test_a_job_is_logged_under_its_calls_tenant(
    make_config, fake_runtimes, fake_profiles, log_lines
):
    config = make_config(runtimes_dir=fake_runtimes, profiles_dir=fake_profiles)
    server = await start(config, FakeRunner(), interceptors=[TenantFromHeader()])
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = RuntimeStub(channel)
            job = pb.Job(id="tenant-job", language="fake", code="now")
            outcome = await stub.Execute(
                pb.ExecuteRequest(job=job), metadata=[("x-tenant", "acme")], timeout=30
            )
            assert outcome.verdict == pb.SUCCESS
    finally:
        await server.stop(grace_s=1)
    lines = [json.loads(line) for line in log_lines().splitlines()]
    [line] = [r for r in lines if r.get("job_id") == "tenant-job"]
    assert line["tenant"] == "acme"
