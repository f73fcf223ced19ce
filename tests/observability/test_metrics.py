"""The Prometheus endpoint of a real server: jobs by language, verdict and tenant, phase
histograms, warm or cold starts, build and cache counts, set-up failures, and the
server's state (slots, queue, warm sandboxes) read at scrape time."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from gristmill.client import Client
from gristmill.deps.cache import ENTRY_BYTES, EnvironmentCache
from gristmill.observability import metrics
from gristmill.server import BackgroundServer
from gristmill.server.app import Server
from gristmill.v1 import runtime_pb2 as pb
from gristmill.v1 import runtime_pb2_grpc as pb_grpc
from tests.observability.conftest import c_job, scrape, value
from tests.observability.test_logs import _broken_profiles

# The generated stub is untyped; held as Any so that calling it is not an untyped call.
RuntimeStub: Any = pb_grpc.RuntimeStub


def _endpoint(server: BackgroundServer) -> str:
    running: Server | None = server._server
    assert running is not None and running.telemetry.metrics is not None
    return running.telemetry.metrics.address


def test_jobs_phases_builds_and_caches_are_counted(real_config, runtimes_dir):
    config = real_config(runtimes_dir=runtimes_dir, **{"telemetry.metrics_address": "127.0.0.1:0"})
    server = BackgroundServer(config)
    with server as address, Client(address) as client:
        endpoint = _endpoint(server)
        before = scrape(endpoint)
        for _ in range(3):
            assert client.execute("bash", "echo hi\n", timeout_s=60).verdict == pb.SUCCESS
        assert client.execute("bash", "exit 3\n", timeout_s=60).verdict == pb.ERROR
        source = c_job()
        for _ in range(2):
            assert client.execute("c", source, timeout_s=120).verdict == pb.SUCCESS
        after = scrape(endpoint)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    bash = {"language": "bash", "tenant": "anonymous"}
    assert delta("gristmill_jobs_total", verdict="SUCCESS", **bash) == 3
    assert delta("gristmill_jobs_total", verdict="ERROR", **bash) == 1
    assert delta("gristmill_jobs_total", language="c", verdict="SUCCESS", tenant="anonymous") == 2
    assert delta("gristmill_job_seconds_count", language="bash") == 4
    for phase in ("queued", "prepare", "sandbox_setup", "run"):
        assert delta("gristmill_job_phase_seconds_count", language="bash", phase=phase) == 4
    assert delta("gristmill_job_phase_seconds_count", language="c", phase="build") == 2
    assert delta("gristmill_job_phase_seconds_count", language="bash", phase="build") == 0
    starts = sum(
        delta("gristmill_job_sandbox_starts_total", language="bash", start=s)
        for s in ("warm", "cold")
    )
    assert starts == 4
    assert delta("gristmill_builds_total", language="c", result="ok") == 1
    assert delta("gristmill_cache_lookups_total", cache="builds", result="miss") == 1
    assert delta("gristmill_cache_lookups_total", cache="builds", result="hit") == 1
    assert value(after, "gristmill_cache_bytes", cache="builds") > 0
    assert value(after, "gristmill_job_slots") == config.max_concurrent_jobs
    assert value(after, "gristmill_queue_capacity") == config.queue_capacity
    assert ("gristmill_jobs_running", frozenset()) in after
    assert ("gristmill_jobs_queued", frozenset()) in after
    # Warm sandboxes are started for Bash after its first job, in the background.
    assert value(after, "gristmill_warm_sandboxes") >= value(
        after, "gristmill_warm_sandboxes_ready", language="bash"
    )
    assert ("gristmill_warm_sandboxes_ready", frozenset({("language", "c")})) in after
    assert value(after, "process_cpu_seconds_total") > 0


def test_running_and_queued_jobs_show_while_they_run(real_config):
    config = real_config(max_concurrent_jobs=1, **{"telemetry.metrics_address": "127.0.0.1:0"})
    server = BackgroundServer(config)
    with server as address, grpc.insecure_channel(address) as channel:
        endpoint = _endpoint(server)
        stub = RuntimeStub(channel)
        calls = [
            stub.ExecuteStream(
                pb.ExecuteRequest(job=pb.Job(id=uuid.uuid4().hex, language="bash", code=code)),
                timeout=60,
            )
            for code in ("sleep 30\n", "true\n")
        ]
        for call in calls:
            assert next(call).HasField("accepted")  # one runs, the other waits
        deadline = time.monotonic() + 30
        while True:
            now = scrape(endpoint)
            if (
                value(now, "gristmill_jobs_running") == 1
                and value(now, "gristmill_jobs_queued") == 1
            ):
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.1)
        for call in calls:
            call.cancel()


def test_sandbox_set_up_failures_are_counted(real_config, runtimes_dir, tmp_path):
    config = real_config(
        runtimes_dir=runtimes_dir,
        profiles_dir=_broken_profiles(tmp_path),
        **{"telemetry.metrics_address": "127.0.0.1:0"},
    )
    server = BackgroundServer(config)
    with server as address, Client(address) as client:
        endpoint = _endpoint(server)
        before = scrape(endpoint)
        assert client.execute("bash", "true\n", timeout_s=60).verdict == pb.SANDBOX_ERROR
        cold = value(
            scrape(endpoint),
            "gristmill_sandbox_setup_failures_total",
            language="bash",
            start="cold",
        )
        assert (
            cold
            - value(before, "gristmill_sandbox_setup_failures_total", language="bash", start="cold")
            == 1
        )
        # The pool then tries to start warm Bash sandboxes, which fail the same way.
        deadline = time.monotonic() + 30
        label = {"language": "bash", "start": "warm"}
        while value(scrape(endpoint), "gristmill_sandbox_setup_failures_total", **label) <= value(
            before, "gristmill_sandbox_setup_failures_total", **label
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_counted_tells_failures_from_successes():
    labels = {"language": f"test-{uuid.uuid4().hex[:8]}"}
    with metrics.counted(metrics.RESOLVES, labels["language"]):
        pass
    with pytest.raises(RuntimeError), metrics.counted(metrics.RESOLVES, labels["language"]):
        raise RuntimeError("the resolver failed")
    sample = metrics.RESOLVES.labels
    assert sample(labels["language"], "ok")._value.get() == 1
    assert sample(labels["language"], "failed")._value.get() == 1


def test_no_endpoint_unless_configured(real_config):
    server = BackgroundServer(real_config())
    with server:
        assert server._server is not None and server._server.telemetry.metrics is None


async def test_a_cache_counts_its_lookups_bytes_and_evictions(tmp_path):
    root = tmp_path / f"cache-{uuid.uuid4().hex[:8]}"
    # Each entry holds one small file, counted as ENTRY_BYTES: the budget holds one entry.
    cache = EnvironmentCache(root, max_bytes=ENTRY_BYTES * 3 // 2)
    name = root.name

    def sample(metric: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(metric, {"cache": name, **labels}) or 0.0

    async def build(target: Path) -> None:
        (target / "payload").write_bytes(b"x" * 1000)

    for digest in ("first", "second", "second"):
        async with cache.use(digest, build):
            pass
    assert sample("gristmill_cache_lookups_total", result="miss") == 2
    assert sample("gristmill_cache_lookups_total", result="hit") == 1
    # The second build put the cache over its budget: the first one went.
    assert sample("gristmill_cache_evictions_total") == 1
    assert sample("gristmill_cache_bytes") == ENTRY_BYTES


PEP723_SIX = (
    '# /// script\n# dependencies = ["six"]\n# ///\nimport six\n\ndef main():\n    return six.PY3\n'
)


def test_a_resolution_and_an_install_are_counted_once(real_config):
    """A Python job with a dependency (from the package registry): the first run resolves
    and installs, the second reuses both."""
    config = real_config(**{"telemetry.metrics_address": "127.0.0.1:0"})
    server = BackgroundServer(config)
    with server as address, Client(address) as client:
        endpoint = _endpoint(server)
        before = scrape(endpoint)
        for _ in range(2):
            outcome = client.execute("python", PEP723_SIX, timeout_s=300)
            assert outcome.verdict == pb.SUCCESS, outcome
        after = scrape(endpoint)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gristmill_resolves_total", language="python", result="ok") == 1
    assert delta("gristmill_cache_lookups_total", cache="environments", result="miss") == 1
    assert delta("gristmill_cache_lookups_total", cache="environments", result="hit") == 1
    for phase in ("resolve", "install"):
        assert delta("gristmill_job_phase_seconds_count", language="python", phase=phase) == 2
