"""Between rows and messages: outcome columns, bounded logs, gRPC targets."""

from __future__ import annotations

import json

from gristmill.queue.records import excerpt, outcome_columns
from gristmill.queue.worker import channel_target, parse_target
from gristmill.v1 import runtime_pb2 as pb


def test_logs_are_kept_as_their_last_bytes_and_marked_when_cut() -> None:
    assert excerpt(b"short", 10) == "short"
    assert excerpt(b"0123456789abc", 3) == "[…cut…]\nabc"
    assert excerpt(b"a\x00b", 10) == "a\ufffdb"


def test_an_outcome_becomes_its_columns() -> None:
    outcome = pb.Outcome(
        verdict=pb.ERROR,
        error=pb.JobError(name="ZeroDivisionError", message="division by zero"),
        stdout=pb.Output(data=b"x" * 100),
        exit_code=1,
    )
    columns = outcome_columns(outcome, max_log_bytes=10)
    assert (columns.state, columns.verdict, columns.result) == ("done", "ERROR", None)
    assert json.loads(columns.error or "")["name"] == "ZeroDivisionError"
    assert columns.stdout.endswith("x" * 10) and columns.stdout.startswith("[…cut…]")
    assert outcome_columns(pb.Outcome(verdict=pb.CANCELLED), 10).state == "cancelled"


def test_a_result_with_nul_characters_is_kept_as_text() -> None:
    columns = outcome_columns(pb.Outcome(verdict=pb.SUCCESS, result_json='"a\\u0000"'), 10)
    assert columns.result is not None and json.loads(columns.result) == '"a\\u0000"'


def test_a_target_is_one_grpc_target_with_its_labels() -> None:
    assert channel_target("127.0.0.1:1") == "dns:///127.0.0.1:1"
    assert channel_target("gristmill.default.svc:50051") == "dns:///gristmill.default.svc:50051"
    assert channel_target("ipv4:10.0.0.1:1,10.0.0.2:1") == "ipv4:10.0.0.1:1,10.0.0.2:1"
    assert parse_target("10.0.0.5:50051=gpu,eu") == ("10.0.0.5:50051", frozenset({"gpu", "eu"}))
    assert parse_target("[::1]:50051") == ("[::1]:50051", frozenset())
