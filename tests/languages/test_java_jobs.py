"""Java jobs through the real server, sandbox, javac and Maven: the build cache, the warm
run, and `//DEPS` resolved from Maven Central into a lockfile that replays and is checked.

Few distinct programs (each costs a javac run, ~2-4 s here) and one small artifact (gson):
the dependency tests need Maven Central.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gristmill.client import Client, outcome_result
from gristmill.config import load_config
from gristmill.errors import SandboxFailure
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import sandbox_work_dir

TIMEOUT_S = 300
TYPED = """\
import java.util.*;

public class Main {
    public record Line(String item, int count) {}

    public static Map<String, Object> main(List<Line> lines, Optional<Double> discount) {
        int total = 0;
        for (Line line : lines) total += line.count();
        return Map.of("total", total, "discount", discount.orElse(0.0));
    }
}
"""
GSON = """\
//DEPS com.google.code.gson:gson:2.10.1
import com.google.gson.Gson;
import java.util.*;

public class Main {
    public static String main(Map<String, Integer> counts) {
        return new Gson().toJson(new TreeMap<>(counts));
    }
}
"""


def serve(backend: str) -> Iterator[Client]:
    with sandbox_work_dir() as work_dir:
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "sandbox_backend": backend,
            "max_concurrent_jobs": 4,
        }
        try:
            server = BackgroundServer(load_config(overrides=overrides))
            address = server.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(f"{backend}: {unusable}")
        try:
            with Client(address) as client:
                yield client
        finally:
            server.__exit__(None, None, None)


@pytest.fixture(scope="module", params=["process", "nsjail"])
def client(request: pytest.FixtureRequest) -> Iterator[Client]:
    yield from serve(request.param)


@pytest.fixture(scope="module")
def deps_client() -> Iterator[Client]:
    yield from serve("process")


def test_a_typed_job_compiles_once_and_then_runs_warm(client):
    args = {"lines": [{"item": "tea", "count": 2}, {"item": "jam", "count": 3}]}
    first = client.execute("java", TYPED, args, timeout_s=TIMEOUT_S)
    assert first.verdict == pb.SUCCESS, first
    assert outcome_result(first)["total"] == 5
    assert outcome_result(first)["discount"] == 0.0
    second = client.execute("java", TYPED, {**args, "discount": 0.5}, timeout_s=TIMEOUT_S)
    assert second.verdict == pb.SUCCESS, second
    assert outcome_result(second)["discount"] == 0.5
    assert second.build.cached and second.build.key == first.build.key
    assert second.usage.phases.build_ms < first.usage.phases.build_ms


def test_arguments_that_do_not_fit_a_record_are_invalid_arguments(client):
    outcome = client.execute("java", TYPED, {"lines": [{"item": "tea"}]}, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.INVALID_ARGUMENTS, outcome
    assert "count" in outcome.error.message


def test_the_heap_follows_the_jobs_memory_limit(client):
    code = "public class Main {\n    public static long main() {\n" \
           "        return Runtime.getRuntime().maxMemory() >> 20;\n    }\n}\n"  # fmt: skip
    small, large = (
        client.execute("java", code, timeout_s=TIMEOUT_S, limits=pb.Limits(memory_bytes=size))
        for size in (128 << 20, 1 << 30)
    )
    assert small.verdict == large.verdict == pb.SUCCESS, (small, large)
    assert outcome_result(small) < 128 * 0.6
    assert 512 <= outcome_result(large) < 1024


def test_gson_resolves_builds_runs_and_is_served_from_the_caches_the_second_time(deps_client):
    first = deps_client.execute("java", GSON, {"counts": {"b": 2, "a": 1}}, timeout_s=TIMEOUT_S)
    assert first.verdict == pb.SUCCESS, first
    assert outcome_result(first) == '{"a":1,"b":2}'
    assert (first.lockfile.language, first.lockfile.format) == ("java", "maven.lock")
    assert "com.google.code.gson:gson:2.10.1 sha256:" in first.lockfile.content
    assert not first.environment.cached and not first.build.cached

    second = deps_client.execute("java", GSON, {"counts": {"c": 3}}, timeout_s=TIMEOUT_S)
    assert second.verdict == pb.SUCCESS, second
    assert second.environment.cached and second.build.cached
    assert second.lockfile.sha256 == first.lockfile.sha256

    replay = deps_client.execute(
        "java", GSON, {"counts": {}}, timeout_s=TIMEOUT_S, lockfile=first.lockfile
    )
    assert replay.verdict == pb.SUCCESS, replay
    assert replay.usage.phases.resolve_ms == 0


def test_a_jar_that_does_not_match_the_lockfile_is_a_dependency_error(deps_client):
    first = deps_client.execute("java", GSON, {"counts": {}}, timeout_s=TIMEOUT_S)
    assert first.verdict == pb.SUCCESS, first
    content = first.lockfile.content
    line = next(x for x in content.splitlines() if x.startswith("com.google.code.gson:gson:"))
    forged = content.replace(line, line[: -len("0" * 64)] + "0" * 64)
    lockfile = pb.Lockfile(language="java", format="maven.lock", content=forged)
    outcome = deps_client.execute(
        "java", GSON, {"counts": {}}, timeout_s=TIMEOUT_S, lockfile=lockfile
    )
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "does not match the lockfile" in outcome.error.message


def test_an_artifact_that_does_not_exist_is_a_dependency_error_in_mavens_words(deps_client):
    code = "//DEPS com.example.gristmill:no-such-artifact-xyz:1.0\n" + GSON.split("\n", 1)[1]
    outcome = deps_client.execute("java", code, {"counts": {}}, timeout_s=TIMEOUT_S)
    assert outcome.verdict == pb.DEPENDENCY_ERROR, outcome
    assert "no-such-artifact-xyz" in outcome.error.message
