"""C# jobs through the real server, sandbox, mcs and mono, on each backend.

Each test's code carries a nonce comment where a fresh build matters; the cold build of
each distinct program happens once per session (the build cache keeps it after).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gristmill.client import Client, outcome_result
from gristmill.config import load_config
from gristmill.errors import SandboxFailure
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

TIMEOUT_S = 120


@pytest.fixture(scope="module", params=["process", "nsjail"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    with sandbox_work_dir() as work_dir:
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "sandbox_backend": request.param,
            "max_concurrent_jobs": 2,
        }
        try:
            server = BackgroundServer(load_config(overrides=overrides))
            address = server.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(f"{request.param}: {unusable}")
        try:
            with Client(address) as client:
                if "csharp" not in {
                    r.language for r in client.list_runtimes().runtimes if r.available
                }:
                    pytest.skip("Mono is not installed (runtimes/csharp/install.sh)")
                yield client
        finally:
            server.__exit__(None, None, None)


def run(client: Client, code: str, args: dict[str, Any] | None = None, **job: Any) -> pb.Outcome:
    return client.execute("csharp", code, args or {}, timeout_s=TIMEOUT_S, **job)


TYPES = """\
using System;
using System.Collections.Generic;
using System.Linq;

public enum Size { Small, Large }

public class Point { public int X; public int Y { get; set; } }

public class Script
{
    public static object Main(int a, string b, double ratio, List<long> ids, int[] counts,
                              Dictionary<string, double> weights, Size size, Point point,
                              int? maybe = null, string greeting = "hi")
    {
        Console.WriteLine("to stdout");
        Console.Error.WriteLine("to stderr");
        return new Dictionary<string, object> {
            { "a", a + 1 }, { "b", b.ToUpper() }, { "ratio", ratio * 2 },
            { "ids", ids.Sum() }, { "counts", counts.Length }, { "weights", weights["w"] },
            { "size", size }, { "point", point.X + point.Y }, { "maybe", maybe },
            { "greeting", greeting }, { "tuple", (1, "two") },
        };
    }
}
"""


def test_arguments_convert_to_the_declared_types(client: Client) -> None:
    args = {
        "a": 1,
        "b": "x",
        "ratio": 0.25,
        "ids": [1, 2],
        "counts": [3, 4, 5],
        "weights": {"w": 1.5},
        "size": "Large",
        "point": {"X": 2, "Y": 3},
    }
    outcome = run(client, TYPES, args)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == {
        "a": 2,
        "b": "X",
        "ratio": 0.5,
        "ids": 3,
        "counts": 3,
        "weights": 1.5,
        "size": "Large",
        "point": 5,
        "maybe": None,
        "greeting": "hi",
        "tuple": [1, "two"],
    }
    assert outcome.stdout.data == b"to stdout\n"
    assert outcome.stderr.data == b"to stderr\n"
