"""A job is logged under the tenant its call authenticated as: a token's name, or
`anonymous` on a server that authenticates no one."""

from __future__ import annotations

import json
from typing import Any

import grpc

from gristmill.server import start
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc as pb_grpc
from tests.conftest import FakeRunner

# The generated stub is untyped; held as Any so that calling it is not an untyped call.
RuntimeStub: Any = pb_grpc.RuntimeStub


async def _run(address: str, job_id: str, token: str | None) -> None:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    async with grpc.aio.insecure_channel(address) as channel:
        job = pb.Job(id=job_id, language="fake", code="now")
        outcome = await RuntimeStub(channel).Execute(
            pb.ExecuteRequest(job=job), metadata=metadata, timeout=30
        )
        assert outcome.verdict == pb.SUCCESS


async def test_a_job_is_logged_under_its_calls_tenant(
    make_config, fake_runtimes, fake_profiles, log_lines
):
    tokens = {"auth.tokens": "acme:secret-acme-token"}
    config = make_config(runtimes_dir=fake_runtimes, profiles_dir=fake_profiles, **tokens)
    server = await start(config, FakeRunner())
    try:
        await _run(server.address, "tenant-job", "secret-acme-token")
    finally:
        await server.stop(grace_s=1)
    lines = [json.loads(line) for line in log_lines().splitlines()]
    [line] = [r for r in lines if r.get("job_id") == "tenant-job"]
    assert line["tenant"] == "acme"
    assert "secret-acme-token" not in log_lines()


async def test_without_authentication_the_tenant_is_anonymous(
    make_config, fake_runtimes, fake_profiles, log_lines
):
    config = make_config(runtimes_dir=fake_runtimes, profiles_dir=fake_profiles)
    server = await start(config, FakeRunner())
    try:
        await _run(server.address, "anonymous-job", None)
    finally:
        await server.stop(grace_s=1)
    lines = [json.loads(line) for line in log_lines().splitlines()]
    [line] = [r for r in lines if r.get("job_id") == "anonymous-job"]
    assert line["tenant"] == "anonymous"
