"""Go jobs through a real server and sandbox: a module dependency resolved with the real
go command, built, run, and served from the caches the second time; a compile error on
the user's line; the lockfile replayed. One server (process backend) for the module, so
the prime step runs once; the conformance suite covers both backends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from gristmill.client import Client, outcome_result
from gristmill.config import load_config
from gristmill.errors import SandboxFailure
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

TIMEOUT_S = 600
UUID_JOB = """package inner

// nonce: %s

import "github.com/google/uuid"

func main(name string) (string, error) {
\treturn uuid.NewSHA1(uuid.NameSpaceDNS, []byte(name)).String(), nil
}
"""
EXPECTED = "ecdc6848-e83f-5bf7-9035-9b3acca454b7"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with sandbox_work_dir() as work_dir:
        overrides = {"address": "127.0.0.1:0", "work_dir": work_dir, "sandbox_backend": "process"}
        try:
            server = BackgroundServer(load_config(overrides=overrides))
            address = server.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(str(unusable))
        try:
            with Client(address) as client:
                yield client
        finally:
            server.__exit__(None, None, None)


def test_a_module_resolves_builds_runs_and_is_served_from_the_caches(client):
    code = UUID_JOB % uuid.uuid4().hex
    first = client.execute("go", code, {"name": "gristmill"}, timeout_s=TIMEOUT_S)
    assert first.verdict == pb.SUCCESS, first
    assert outcome_result(first) == EXPECTED
    assert "-- go.mod --" in first.lockfile.content
    assert "github.com/google/uuid v1." in first.lockfile.content
    assert "h1:" in first.lockfile.content
    assert not first.build.cached

    second = client.execute("go", code, {"name": "gristmill"}, timeout_s=TIMEOUT_S)
    assert second.verdict == pb.SUCCESS, second
    assert outcome_result(second) == EXPECTED
    # Warm: the environment and the binary both come from the caches; no go process ran.
    assert second.environment.cached and second.build.cached
    assert second.usage.phases.install_ms == 0

    replayed = client.execute(
        "go",
        UUID_JOB % uuid.uuid4().hex,
        {"name": "gristmill"},
        lockfile=first.lockfile,
        timeout_s=TIMEOUT_S,
    )
    assert replayed.verdict == pb.SUCCESS, replayed
    assert replayed.usage.phases.resolve_ms == 0
    assert replayed.lockfile.content == first.lockfile.content


def test_a_lockfile_with_a_replace_is_refused(client):
    lockfile = pb.Lockfile(
        language="go",
        format="go.mod+go.sum",
        content="-- go.mod --\nmodule gristmill.job\nreplace x => ../x\n-- go.sum --\n",
    )
    with pytest.raises(grpc.RpcError) as refused:
        client.execute("go", UUID_JOB % "r", {"name": "x"}, lockfile=lockfile, timeout_s=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'replace' is not allowed" in refused.value.details()


def test_a_compile_error_names_the_users_file_and_line(client):
    nonce = uuid.uuid4().hex
    code = f"package inner\n\n// {nonce}\nfunc main() (int, error) {{\n\treturn x, nil\n}}\n"
    outcome = client.execute("go", code, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.COMPILE_ERROR, outcome
    assert "main.go:5:" in outcome.error.message
    assert "undefined: x" in outcome.error.message


def test_a_panic_reports_the_users_frames_innermost_last(client):
    code = (
        f"package inner\n\n// {uuid.uuid4().hex}\n"
        'func inner2() {\n\tpanic("deep")\n}\n\n'
        "func main() error {\n\tinner2()\n\treturn nil\n}\n"
    )
    outcome = client.execute("go", code, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.ERROR, outcome
    assert outcome.error.message == "deep"
    frames = [(f.file, f.line, f.function) for f in outcome.error.stack]
    assert frames == [("main.go", 9, "main"), ("main.go", 5, "inner2")]
