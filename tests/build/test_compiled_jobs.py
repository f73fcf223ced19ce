"""The build phase through the real server, sandbox and compiler, on each backend.

The languages are test-only folders (`tests/build/runtimes/`): `c`, compiled by gcc
with its wrapper linked in and a file its plugin generates; `probe`, whose build step
reports what it could reach; `slow`, whose build outlives its own time limit;
`planter`, whose build leaves setuid files and, when asked, a fifo; `flooder`, whose
build writes as many MiB as its code says. Each
test's code is unique (a `nonce` comment), so that what one test builds is never
another's cache hit.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gristmill.client import Client, outcome_result
from gristmill.config import load_config
from gristmill.errors import SandboxFailure
from gristmill.languages.registry import REPO_ROOT
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

RUNTIMES = Path(__file__).parent / "runtimes"
TIMEOUT_S = 60
BUILD_CACHE_BYTES = 16 * 1024 * 1024
"""The servers' build cache budget: small, for `flooder` to pass (the others fit)."""
SQUARE = """\
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* nonce: %s */
const char *run(const char *args_json) {
    static char out[64];
    const char *n = strchr(args_json, ':');
    long value = n ? strtol(n + 1, NULL, 10) : 0;
    snprintf(out, sizeof out, "{\\"square\\": %%ld}", value * value);
    return out;
}
"""


def square_job() -> str:
    return SQUARE % uuid.uuid4().hex


@pytest.fixture(scope="module", params=["process", "nsjail"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Client, Path]]:
    """A client of a real server on each backend, knowing only the test languages, and
    the server's work directory."""
    with sandbox_work_dir() as work_dir:
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "runtimes_dir": RUNTIMES,
            "profiles_dir": REPO_ROOT / "sandbox" / "profiles",
            "sandbox_backend": request.param,
            "max_concurrent_jobs": 4,
            "max_limits.network": True,
            "deps.build_cache_max_bytes": BUILD_CACHE_BYTES,
        }
        try:
            server = BackgroundServer(load_config(overrides=overrides))
            address = server.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(f"{request.param}: {unusable}")
        try:
            with Client(address) as client:
                yield client, work_dir
        finally:
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(server: tuple[Client, Path]) -> Client:
    return server[0]


@pytest.fixture(scope="module")
def work_dir(server: tuple[Client, Path]) -> Path:
    return server[1]


def run(client: Client, code: str, **job: Any) -> pb.Outcome:
    return client.execute("c", code, {"n": 7}, timeout_s=TIMEOUT_S, **job)


def test_c_job_compiles_and_runs_with_its_arguments(client):
    outcome = run(client, square_job())
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == {"square": 49}
    assert outcome.HasField("build") and not outcome.build.cached
    assert len(outcome.build.key) == 64
    assert outcome.usage.phases.build_ms > 0


def test_second_identical_job_is_served_from_the_build_cache(client):
    code = square_job()
    first, second = run(client, code), run(client, code)
    assert (first.verdict, second.verdict) == (pb.SUCCESS, pb.SUCCESS), (first, second)
    assert (first.build.cached, second.build.cached) == (False, True)
    assert second.build.key == first.build.key
    assert outcome_result(second) == {"square": 49}


def test_syntax_error_is_compile_error_with_gccs_own_message(client):
    outcome = run(client, "const char *run(const char *args_json {\n    return 0;\n}\n")
    assert outcome.verdict == pb.COMPILE_ERROR, outcome
    assert outcome.error.name == "CompileError"
    assert "main.c:1:" in outcome.error.message and "error:" in outcome.error.message
    assert "Traceback" not in outcome.error.message
    assert not outcome.build.cached and outcome.build.key
    assert outcome.usage.phases.run_ms == 0


def test_a_failed_build_is_not_kept(client):
    broken = "int run( {\n"
    outcomes = [run(client, broken) for _ in range(2)]
    assert [o.verdict for o in outcomes] == [pb.COMPILE_ERROR] * 2
    assert [o.build.cached for o in outcomes] == [False, False]


def test_concurrent_identical_jobs_compile_once(client):
    code = square_job()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: run(client, code), range(4)))
    assert all(o.verdict == pb.SUCCESS for o in outcomes), outcomes
    assert sorted(o.build.cached for o in outcomes) == [False, True, True, True]
    assert len({o.build.key for o in outcomes}) == 1


def test_changed_source_compiles_again(client):
    first, second = run(client, square_job()), run(client, square_job())
    assert not first.build.cached and not second.build.cached
    assert first.build.key != second.build.key


def test_the_order_of_the_jobs_files_does_not_change_the_build(client):
    code, files = square_job(), {"a.h": "#define A 1\n", "b.h": "#define B 2\n"}
    first = run(client, code, files=files)
    second = run(client, code, files=dict(reversed(files.items())))
    assert (first.build.cached, second.build.cached) == (False, True)


def test_changed_entry_point_changes_the_generated_file_and_compiles_again(client):
    code = square_job() + 'const char *other(const char *a) { (void)a; return "1"; }\n'
    by_run, by_other = run(client, code), run(client, code, entry_point="other")
    assert (outcome_result(by_run), outcome_result(by_other)) == ({"square": 49}, 1)
    assert not by_other.build.cached and by_other.build.key != by_run.build.key


def test_stream_announces_build_before_sandbox_setup(client):
    events = list(client.execute_stream("c", square_job(), {"n": 2}, timeout_s=TIMEOUT_S))
    phases = [e.phase.name for e in events if e.HasField("phase")]
    firsts = list(dict.fromkeys(phases))
    assert firsts == ["build", "prepare", "sandbox_setup", "run"], phases
    assert events[-1].outcome.verdict == pb.SUCCESS


def test_compile_error_stream_ends_after_build(client):
    events = list(client.execute_stream("c", "int run( {\n", timeout_s=TIMEOUT_S))
    phases = {e.phase.name for e in events if e.HasField("phase")}
    assert phases == {"build"}
    assert not any(e.HasField("started") for e in events)
    assert events[-1].outcome.verdict == pb.COMPILE_ERROR


@pytest.fixture
def host_port() -> Iterator[int]:
    """A TCP port listening on the host's loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def test_build_step_has_no_network_even_when_the_job_has_it(client):
    limits = pb.Limits(network=True, wall_time_ms=20_000)
    # The package registry: what a network-on job may reach (never the host's loopback).
    outcome = client.execute("probe", "pypi.org:443", limits=limits, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.SUCCESS, outcome
    found = outcome_result(outcome)
    # The run, granted the network, reaches the registry: the probe can tell.
    assert found["run"] == "connected"
    assert found["build"].startswith("unreachable"), found


def test_run_sees_the_build_output_read_only(client, host_port):
    outcome = client.execute("probe", str(host_port), timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome)["build_dir_writable"] is False


@pytest.mark.attack("cross-tenant cache poisoning")
def test_a_jobs_env_never_reaches_its_build_which_another_jobs_inputs_would_hit(
    client: Client, host_port: int
) -> None:
    # A build entry is keyed by the build's inputs, which exclude the job's env: were the
    # env to reach the build step, a job could make the entry that the same code without
    # it (another tenant's job, say) is then served differ from what its own build makes.
    code, nonce = str(host_port), {"nonce": uuid.uuid4().hex}
    poisoned = client.execute(
        "probe", code, env={"POISON": "yes"}, files=nonce, timeout_s=TIMEOUT_S
    )
    assert poisoned.verdict == pb.SUCCESS, poisoned
    found = outcome_result(poisoned)
    assert found["run_poison"] == "yes"  # the control: the run has it
    assert "POISON" not in found["build_variables"], found
    clean = client.execute("probe", code, files=nonce, timeout_s=TIMEOUT_S)
    assert clean.verdict == pb.SUCCESS, clean
    assert clean.build.cached and clean.build.key == poisoned.build.key
    assert outcome_result(clean)["build_variables"] == found["build_variables"]


def test_build_past_its_own_time_limit_is_compile_error(client):
    limits = pb.Limits(wall_time_ms=60_000)
    outcome = client.execute("slow", uuid.uuid4().hex, limits=limits, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.COMPILE_ERROR, outcome
    assert outcome.error.message.startswith("sleep did not finish within 1 s")
    assert outcome.usage.phases.build_ms < 10_000


def test_setuid_setgid_and_sticky_bits_a_build_sets_are_not_kept(client):
    # Sealed, the output is owned by the service's user (root): a setuid bit kept would
    # give any local user who can reach the cache a root shell.
    outcome = client.execute("planter", uuid.uuid4().hex, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.SUCCESS, outcome
    assert outcome_result(outcome) == {"program": "0o755", "shared": "0o755", "sticky": "0o644"}


def test_a_build_that_leaves_a_fifo_is_compile_error_and_not_kept(client):
    code = f"fifo {uuid.uuid4().hex}"
    outcomes = [client.execute("planter", code, timeout_s=TIMEOUT_S) for _ in range(2)]
    assert [o.verdict for o in outcomes] == [pb.COMPILE_ERROR] * 2, outcomes
    assert "pipe, which is not a regular file, directory or symlink" in outcomes[0].error.message
    assert [o.build.cached for o in outcomes] == [False, False]


@pytest.mark.attack("install scripts and disk")
@pytest.mark.parametrize("how", ["", "allocate"], ids=["written", "allocated"])
def test_a_build_that_fills_the_disk_is_stopped_at_the_cache_budget_and_not_kept(
    client: Client, work_dir: Path, how: str
) -> None:
    # 256 MiB against a 16 MiB budget, written, or allocated past the end of an empty file
    # (fallocate --keep-size, which RLIMIT_FSIZE does not stop; the cache counted sizes
    # only, and kept that build: SUCCESS): stopped, a COMPILE_ERROR naming the setting,
    # nothing of it in the cache (kept or half-built), and the next build is served.
    flood = client.execute("flooder", f"256 {uuid.uuid4().hex} {how}", timeout_s=TIMEOUT_S)
    assert flood.verdict == pb.COMPILE_ERROR, flood
    assert "deps.build_cache_max_bytes" in flood.error.message, flood.error.message
    builds = work_dir / "deps" / "builds"
    assert not (builds / "envs" / flood.build.key).exists()
    assert list((builds / "tmp").iterdir()) == []
    fits = client.execute("flooder", f"2 {uuid.uuid4().hex}", timeout_s=TIMEOUT_S)
    assert fits.verdict == pb.SUCCESS, fits
    assert outcome_result(fits) == "built"


def test_the_prime_step_runs_once_and_every_build_reads_it_read_only(client):
    first = client.execute("primed", f"one {uuid.uuid4().hex}", timeout_s=TIMEOUT_S)
    second = client.execute("primed", f"two {uuid.uuid4().hex}", timeout_s=TIMEOUT_S)
    assert first.verdict == second.verdict == pb.SUCCESS, (first, second)
    assert not first.build.cached and not second.build.cached
    stamp, shared = outcome_result(first).split()
    # Two different builds saw the same stamp: the prime step ran once for both.
    assert outcome_result(second).split() == [stamp, "shared-read-only"]
    assert shared == "shared-read-only"


def test_prime_at_start_primes_before_the_server_serves():
    with sandbox_work_dir() as work_dir:
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "runtimes_dir": RUNTIMES,
            "profiles_dir": REPO_ROOT / "sandbox" / "profiles",
            "sandbox_backend": "process",
            "deps.prime_at_start": True,
        }
        try:
            server = BackgroundServer(load_config(overrides=overrides))
            address = server.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(str(unusable))
        try:
            serving_since_ns = time.time_ns()
            with Client(address) as client:
                outcome = client.execute("primed", uuid.uuid4().hex, timeout_s=TIMEOUT_S)
        finally:
            server.__exit__(None, None, None)
    assert outcome.verdict == pb.SUCCESS, outcome
    stamp = int(str(outcome_result(outcome)).split()[0])
    assert stamp < serving_since_ns
