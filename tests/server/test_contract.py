"""The friendlier contract: an outcome too large for the caller told apart from a full
server, field errors as google.rpc.BadRequest, outcomes kept within their byte budget."""

from __future__ import annotations

import concurrent.futures
import time

import grpc
import pytest

from gristmill.client import (
    Client,
    RetryPolicy,
    field_violations,
    quota_failures,
    server_full,
    too_large,
)
from gristmill.v1 import runtime_pb2 as pb

FAIL_FAST = RetryPolicy(wait_for_ready=False, max_attempts=1)
BIG = {"blob": "x" * 64 * 1024}


def test_an_outcome_over_the_callers_message_limit_is_not_a_full_server(fake_server):
    address, runner = fake_server()
    small = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 4096)])
    retry = RetryPolicy(wait_for_ready=False, retry_resource_exhausted=True)
    with Client(address, retry=retry, channel=small) as client, pytest.raises(grpc.RpcError) as e:
        client.execute("fake", "now", BIG, job_id="big", timeout_s=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert too_large(e.value)
    assert not server_full(e.value)
    assert len(runner.calls) == 1  # not retried: waiting would not make it smaller
    # The outcome is kept: a client with room for it collects it without a new run.
    with Client(address, retry=FAIL_FAST) as client:
        kept = client.get_outcome("big", timeout_s=10)
    assert kept.state == pb.JOB_STATE_DONE
    assert len(kept.outcome.result_json) > 64 * 1024
    assert len(runner.calls) == 1


def test_a_full_server_says_so_in_a_quota_failure(fake_server):
    address, runner = fake_server(max_concurrent_jobs=1, max_queued_jobs=0)
    with (
        Client(address, retry=FAIL_FAST) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(client.execute, "fake", "gate", timeout_s=30)
        for _ in range(3000):
            if runner.calls:
                break
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as full:
            client.execute("fake", "now", timeout_s=10)
        runner.gate.set()
        running.result()
    assert server_full(full.value)
    assert not too_large(full.value)
    assert [v.subject for v in quota_failures(full.value)] == ["server"]


def test_field_errors_come_as_bad_request_details(fake_server):
    address, _ = fake_server()
    with Client(address, retry=FAIL_FAST) as client, pytest.raises(grpc.RpcError) as refused:
        client.execute(
            "fake", "now", job_id="bad id!", limits=pb.Limits(memory_bytes=1), timeout_s=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(refused.value)
    assert list(violations) == ["job.id"]
    assert violations["job.id"] == "at most 128 characters of [A-Za-z0-9._:-]"
    assert refused.value.details() == "job.id: at most 128 characters of [A-Za-z0-9._:-]"


def test_outcomes_past_the_byte_budget_are_forgotten_and_get_outcome_says_unknown(fake_server):
    address, runner = fake_server(**{"caps.recent_jobs_bytes": 200 * 1024})
    with Client(address, retry=FAIL_FAST) as client:
        for index in range(3):
            client.execute("fake", "now", BIG, job_id=f"kept-{index}", timeout_s=10)
        states = [client.get_outcome(f"kept-{i}", timeout_s=10).state for i in range(3)]
    # About 130 KiB each (request and result): only the newest fits in 200 KiB.
    assert states == [pb.JOB_STATE_UNKNOWN, pb.JOB_STATE_UNKNOWN, pb.JOB_STATE_DONE]
    assert len(runner.calls) == 3


def test_resolve_and_describe_name_their_own_fields_on_a_real_server(real_server):
    with Client(real_server, retry=FAIL_FAST) as client:
        failures = []
        for call in (
            lambda: client.resolve("cobol", "x", timeout_s=60),
            lambda: client.resolve("python", "import yaml\n", {"../x.py": "y"}, timeout_s=60),
            lambda: client.describe("python", "def main(:\n", timeout_s=60),
            lambda: client.describe("python", "def main(): pass\n", "other", timeout_s=60),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            failures.append(list(field_violations(refused.value)))
    assert failures == [["language"], ["files[0].path"], ["code"], ["entry_point"]]
