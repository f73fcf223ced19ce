"""Tenants: quotas that keep one tenant from filling the server, their own maxima, their
own job ids, and GetOutcome within them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import grpc
import pytest

from gristmill.client import (
    Client,
    Credentials,
    RetryPolicy,
    field_violations,
    quota_failures,
    server_full,
)
from gristmill.errors import Overloaded
from gristmill.server.admission import Admission, Quota
from gristmill.v1 import runtime_pb2 as pb

TOKENS = "alice:a-token bob:b-token ops:o-token"
FAIL_FAST = RetryPolicy(wait_for_ready=False, max_attempts=1)


def _client(address: str, token: str) -> Client:
    return Client(address, retry=FAIL_FAST, credentials=Credentials(token=token))


def _wait_until(predicate, what: str) -> None:
    for _ in range(3000):
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_a_tenant_at_its_running_quota_waits_while_others_pass():
    admission = Admission(max_running=3, max_queued=10)
    alice = Quota("alice", max_running=1, max_queued=5)
    bob = Quota("bob", max_running=2, max_queued=5)
    first = admission.admit(alice)
    queued = admission.admit(alice)
    assert queued.waiting
    bobs = admission.admit(bob)  # alice's waiting job does not hold bob back
    assert not bobs.waiting
    assert (admission.running_of("alice"), admission.queued_of("alice")) == (1, 1)
    first.release()
    assert await queued.wait_turn(asyncio.Event())
    assert admission.running_of("alice") == 1
    for ticket in (queued, bobs):
        ticket.release()
    assert admission.running == 0


async def test_a_full_tenant_quota_names_the_tenant_and_the_server_stays_open():
    admission = Admission(max_running=4, max_queued=4)
    alice = Quota("alice", max_running=1, max_queued=1)
    admission.admit(alice)
    admission.admit(alice)
    with pytest.raises(Overloaded, match="tenant 'alice'") as full:
        admission.admit(alice)
    assert full.value.subject == "tenant:alice"
    admission.admit(Quota("bob", 4, 4))


def test_resource_exhausted_names_whose_quota_is_full(fake_server):
    address, runner = fake_server(
        max_concurrent_jobs=4,
        **{
            "auth.tokens": TOKENS,
            "tenants.alice.max_concurrent_jobs": 1,
            "tenants.alice.max_queued_jobs": 0,
        },
    )
    with (
        _client(address, "a-token") as alice,
        _client(address, "b-token") as bob,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(alice.execute, "fake", "gate", job_id="alice-1", timeout_s=30)
        _wait_until(lambda: len(runner.calls) == 1, "alice's job runs")
        with pytest.raises(grpc.RpcError) as refused:
            alice.execute("fake", "now", job_id="alice-2", timeout_s=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "tenant 'alice'" in refused.value.details()
        assert server_full(refused.value)
        assert [v.subject for v in quota_failures(refused.value)] == ["tenant:alice"]
        # Bob is not held back by alice's quota.
        assert bob.execute("fake", "now", timeout_s=10).verdict == pb.SUCCESS
        runner.gate.set()
        assert running.result().verdict == pb.SUCCESS


def test_a_tenant_maximum_is_its_own_and_the_error_names_the_field(fake_server):
    address, _ = fake_server(
        **{"auth.tokens": TOKENS, "tenants.bob.max_limits.memory_bytes": 256 * 1024 * 1024}
    )
    limits = pb.Limits(memory_bytes=512 * 1024 * 1024)
    with _client(address, "a-token") as alice:
        assert alice.execute("fake", "now", limits=limits, timeout_s=10).verdict == pb.SUCCESS
    with _client(address, "b-token") as bob, pytest.raises(grpc.RpcError) as refused:
        bob.execute("fake", "now", limits=limits, timeout_s=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(refused.value)
    assert list(violations) == ["job.limits.memory_bytes"]
    assert "over this server's maximum 268435456" in violations["job.limits.memory_bytes"]


def test_job_ids_are_each_tenants_own(fake_server):
    address, runner = fake_server(**{"auth.tokens": TOKENS})
    with (
        _client(address, "a-token") as alice,
        _client(address, "b-token") as bob,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(alice.execute, "fake", "gate", job_id="shared", timeout_s=30)
        _wait_until(lambda: len(runner.calls) == 1, "alice's job runs")
        # Bob sees nothing of alice's job and cannot cancel it; his own id runs apart.
        assert bob.get_outcome("shared").state == pb.JOB_STATE_UNKNOWN
        assert bob.cancel("shared") is False
        assert alice.get_outcome("shared").state == pb.JOB_STATE_RUNNING
        assert bob.execute("fake", "now", job_id="shared", timeout_s=10).tenant == "bob"
        runner.gate.set()
        assert running.result().verdict == pb.SUCCESS
    assert [job.tenant for job in runner.calls] == ["alice", "bob"]


def test_get_outcome_unknown_running_waited_for_and_done_without_running_again(fake_server):
    address, runner = fake_server(**{"auth.tokens": TOKENS})
    with _client(address, "a-token") as alice, concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert alice.get_outcome("never-sent").state == pb.JOB_STATE_UNKNOWN
        sent = pool.submit(alice.execute, "fake", "gate", {"n": 7}, job_id="sent", timeout_s=30)
        _wait_until(lambda: len(runner.calls) == 1, "the job runs")
        waited = pool.submit(alice.get_outcome, "sent", wait=True, timeout_s=30)
        assert alice.get_outcome("sent").state == pb.JOB_STATE_RUNNING
        runner.gate.set()
        response = waited.result()
        assert response.state == pb.JOB_STATE_DONE
        assert response.outcome == sent.result()
        again = alice.get_outcome("sent")
    assert again.state == pb.JOB_STATE_DONE
    assert again.outcome.result_json == '{"n": 7}'
    assert again.outcome.tenant == "alice"
    assert len(runner.calls) == 1


def test_get_outcome_says_queued_while_the_job_waits_for_a_slot(fake_server):
    address, runner = fake_server(max_concurrent_jobs=1, **{"auth.tokens": TOKENS})
    with _client(address, "a-token") as alice, concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(alice.execute, "fake", "gate", job_id="first", timeout_s=30)
        _wait_until(lambda: len(runner.calls) == 1, "the first job runs")
        second = pool.submit(alice.execute, "fake", "now", job_id="second", timeout_s=30)
        _wait_until(
            lambda: alice.get_outcome("second").state == pb.JOB_STATE_QUEUED, "second queued"
        )
        runner.gate.set()
        assert first.result().verdict == second.result().verdict == pb.SUCCESS


def test_list_runtimes_shows_host_paths_to_operators_only(fake_server):
    address, _ = fake_server(**{"auth.tokens": TOKENS, "tenants.ops.operator": True})
    with _client(address, "o-token") as ops, _client(address, "a-token") as alice:
        operator, tenant = ops.list_runtimes(), alice.list_runtimes()
    for listing, shown in ((operator, True), (tenant, False)):
        missing = {r.language: r for r in listing.runtimes}["missing"]
        assert ("/nonexistent/toolchain" in missing.unavailable_reason) is shown
        assert "toolchain" in missing.unavailable_reason
        assert listing.caller.operator is shown
        assert listing.server_version
        assert listing.server_build
    assert tenant.caller.tenant == "alice"
    assert tenant.caller.max_concurrent_jobs >= 1
    assert tenant.caller.max_limits.memory_bytes > 0


def test_describe_and_resolve_name_their_own_fields(fake_server):
    address, _ = fake_server()
    with Client(address, retry=FAIL_FAST) as client:
        with pytest.raises(grpc.RpcError) as unknown:
            client.describe("cobol", "x", timeout_s=10)
        with pytest.raises(grpc.RpcError) as bad_entry:
            client.describe("fake", "x", entry_point="not a name", timeout_s=10)
        with pytest.raises(grpc.RpcError) as job_language:
            client.execute("cobol", "x", timeout_s=10)
    assert list(field_violations(unknown.value)) == ["language"]
    assert unknown.value.details().startswith("language: unknown language 'cobol'")
    assert list(field_violations(bad_entry.value)) == ["entry_point"]
    assert list(field_violations(job_language.value)) == ["job.language"]


def test_tenant_defaults_give_every_unnamed_tenant_its_share(fake_server):
    address, runner = fake_server(
        max_concurrent_jobs=4,
        **{
            "auth.tokens": TOKENS,
            "tenant_defaults.max_concurrent_jobs": 1,
            "tenant_defaults.max_queued_jobs": 0,
            "tenants.ops.max_concurrent_jobs": 3,
        },
    )
    with (
        _client(address, "a-token") as alice,
        _client(address, "o-token") as ops,
        concurrent.futures.ThreadPoolExecutor(3) as pool,
    ):
        running = [pool.submit(alice.execute, "fake", "gate", timeout_s=30)]
        _wait_until(lambda: len(runner.calls) == 1, "alice's job runs")
        with pytest.raises(grpc.RpcError) as refused:
            alice.execute("fake", "now", timeout_s=10)
        assert [v.subject for v in quota_failures(refused.value)] == ["tenant:alice"]
        running += [pool.submit(ops.execute, "fake", "gate", timeout_s=30) for _ in range(2)]
        _wait_until(lambda: len(runner.calls) == 3, "ops runs two beside alice's")
        assert ops.list_runtimes().caller.max_concurrent_jobs == 3
        runner.gate.set()
        assert all(future.result().verdict == pb.SUCCESS for future in running)


def test_tenant_defaults_come_from_the_environment_too():
    from gristmill.config import load_config
    from gristmill.server.tenants import Tenants

    config = load_config(environ={"GRISTMILL_TENANT_DEFAULTS_MAX_CONCURRENT_JOBS": "2"})
    tenant = Tenants(config).get("someone")
    assert (tenant.quota.max_running, tenant.quota.max_queued) == (2, 8)
