"""Errors stay small and typed: a refused request's trailers hold a bounded quote of
what it sent, however long that was, so the client sees INVALID_ARGUMENT (past gRPC's
8 KiB of trailers it would see RESOURCE_EXHAUSTED, read as "server full", and retry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from gristmill.config import load_config
from gristmill.errors import InvalidRequest, quoted
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

LONG = 1 << 20
"""A value as long as a request may carry (1 MiB: the code's cap)."""
SMALL_TRAILERS = 2048


def _long(char: str = "a") -> str:
    return char * LONG


def _job(**fields: Any) -> pb.Job:
    return pb.Job(
        **{"id": "long", "language": "python", "code": "def main():\n    pass\n", **fields}
    )


def _files(*paths: str) -> list[pb.File]:
    return [pb.File(path=path) for path in paths]


DEEP_PATH = "/".join(["d"] * 2000) + "/../x"
"""The review's path: 2,000 components (4 KB), refused, once echoed whole."""

WIDE_PATH = "/".join(["é" * 100] * 2500)
"""A path of 500 KB whose every component is a valid name."""

JOBS: dict[str, pb.Job] = {
    "id": _job(id=_long()),
    "language": _job(language=_long()),
    "code": _job(code=_long() + "x"),
    "entry_point": _job(entry_point=_long("-")),
    "args_json": _job(args_json="{" + _long()),
    "args_json_array": _job(args_json="[" + "1," * (LONG // 2) + "1]"),
    "files_deep_path": _job(files=_files(DEEP_PATH)),
    "files_absolute": _job(files=_files("/" + _long())),
    "files_long_component": _job(files=_files(_long())),
    "files_twice": _job(files=_files(WIDE_PATH, WIDE_PATH)),
    "files_under_a_file": _job(files=_files(WIDE_PATH, WIDE_PATH + "/x")),
    "files_nul": _job(files=_files(_long() + "\0")),
    "files_count": _job(files=_files(*(f"f{index}" for index in range(1001)))),
    "env_total": _job(env={"A": _long()}),
    "env_name": _job(env={"1" + "A" * 60_000: ""}),
    "env_name_unicode": _job(env={"é" * 30_000: ""}),
    "env_reserved": _job(env={"GRISTMILL_" + "A" * 60_000: ""}),
    "env_loader": _job(env={"LD_" + "A" * 60_000: ""}),
    "env_language": _job(env={"PYTHON" + "A" * 60_000: ""}),
    "env_nul": _job(env={"A" * 30_000: "\0" * 30_000}),
    "context_key": _job(context={"k" * 60_000: ""}),
    "context_nul": _job(context={"K" * 30_000: "\0"}),
    "context_total": _job(context={"K": _long()}),
    "output_files_long": _job(output_files=[_long()]),
    "output_files_escape": _job(output_files=["/" + "a" * 4000]),
    "output_files_count": _job(output_files=["a"] * 65),
    "stdin": _job(stdin=b"x" * (16 * LONG + 1)),
    "limits": _job(limits=pb.Limits(memory_bytes=2**63 - 1, wall_time_ms=2**63 - 1)),
    "network_allow": _job(limits=pb.Limits(network=True), network_allow=[_long()]),
    "network_allow_off": _job(network_allow=[_long()]),
    "lockfile_language": _job(lockfile=pb.Lockfile(language=_long(), content="x")),
    "lockfile_format": _job(lockfile=pb.Lockfile(format=_long(), content="x")),
    "lockfile_sha256": _job(lockfile=pb.Lockfile(content="x", sha256=_long())),
    "lockfile_content": _job(lockfile=pb.Lockfile(content="git+https://" + _long() + "\n")),
    "lockfile_bash": _job(language="bash", code="echo", lockfile=pb.Lockfile(content=_long())),
    "script_nul": _job(script=pb.Script(argv=[_long() + "\0"])),
    "script_count": _job(script=pb.Script(argv=["a"] * 4097)),
    "script_go": _job(language="go", code="package x", script=pb.Script(argv=[_long()])),
    "script_with_entry_point": _job(entry_point=_long(), script=pb.Script(argv=[_long()])),
}

CALLS: dict[str, tuple[str, Message, Callable[[bytes], Message]]] = {
    **{
        f"Execute-{name}": ("Execute", pb.ExecuteRequest(job=job), pb.Outcome.FromString)
        for name, job in JOBS.items()
    },
    "Describe-language": (
        "Describe",
        pb.DescribeRequest(language=_long()),
        pb.DescribeResponse.FromString,
    ),
    "Describe-entry_point": (
        "Describe",
        pb.DescribeRequest(language="python", code="x", entry_point=_long()),
        pb.DescribeResponse.FromString,
    ),
    "Resolve-language": (
        "Resolve",
        pb.ResolveRequest(language=_long()),
        pb.ResolveResponse.FromString,
    ),
    "Resolve-files": (
        "Resolve",
        pb.ResolveRequest(language="python", code="x", files=_files(DEEP_PATH)),
        pb.ResolveResponse.FromString,
    ),
    "GetOutcome-job_id": (
        "GetOutcome",
        pb.GetOutcomeRequest(job_id=_long()),
        pb.GetOutcomeResponse.FromString,
    ),
    "Cancel-job_id": (
        "Cancel",
        pb.CancelRequest(job_id=_long()),
        pb.CancelResponse.FromString,
    ),
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real server that lets jobs ask for the network (so their allow lists are read)."""
    with sandbox_work_dir() as work_dir:
        overrides = {"address": "127.0.0.1:0", "work_dir": work_dir, "max_limits.network": True}
        with BackgroundServer(load_config(overrides=overrides)) as address:
            yield address


def _trailers_size(error: grpc.RpcError) -> int:
    """The bytes the refusal's trailers take: its message and its metadata (details)."""
    metadata = error.trailing_metadata() or ()
    return len((error.details() or "").encode()) + sum(
        len(key) + len(value) for key, value in metadata
    )


@pytest.mark.attack("errors: bounded echoes")
@pytest.mark.parametrize("call", CALLS, ids=list(CALLS))
def test_the_longest_value_of_every_field_is_refused_in_small_trailers(
    server: str, call: str
) -> None:
    method, request, reply = CALLS[call]
    with grpc.insecure_channel(
        server, options=[("grpc.max_send_message_length", 64 * LONG)]
    ) as channel:
        rpc = channel.unary_unary(
            f"/gristmill.v1.Runtime/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=reply,
        )
        with pytest.raises(grpc.RpcError) as refused:
            rpc(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert _trailers_size(refused.value) < SMALL_TRAILERS


def test_a_quoted_value_is_cut_and_says_how_long_it_was() -> None:
    assert quoted("short") == "'short'"
    cut = quoted("é" * 1000)
    assert cut.startswith("'éé") and cut.endswith("... (2000 bytes)")
    assert len(cut) < 80


def test_an_error_built_from_a_long_value_is_bounded_whatever_built_it() -> None:
    """The net under `quoted`: a message or field quoting a whole value is cut too."""
    error = InvalidRequest("job.x[" + "k" * 10_000 + "]", "v" * 10_000)
    assert len(error.field) < 200 and len(error.detail) < 500
    assert error.detail.endswith("... (10000 bytes)")
