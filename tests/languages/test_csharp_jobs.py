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


def test_the_jobs_other_cs_files_are_compiled_with_it_and_their_lines_reported(
    client: Client,
) -> None:
    code = (
        "public class Script { public static object Main(int n) { return Helpers.Lib.Half(n); } }\n"
    )
    helper = (
        "namespace Helpers {\n"
        "    public static class Lib {\n"
        "        public static int Half(int n) {\n"
        "            return 10 / (n - n) + n / 2;\n"
        "        }\n"
        "    }\n"
        "}\n"
    )
    outcome = run(client, code, {"n": 4}, files={"lib/helpers.cs": helper})
    assert outcome.verdict == pb.ERROR, outcome
    assert outcome.error.name == "DivideByZeroException"
    frames = [(f.file, f.line) for f in outcome.error.stack]
    assert frames == [("main.cs", 1), ("lib/helpers.cs", 4)]


def test_a_compile_error_names_the_users_file_and_line(client: Client) -> None:
    code = "public class Script {\n    public static object Main() {\n        return undefined;\n"
    code += "    }\n}\n"
    outcome = run(client, code)
    assert outcome.verdict == pb.COMPILE_ERROR, outcome
    assert outcome.error.name == "CompileError"
    assert "main.cs(3,16): error CS0103" in outcome.error.message
