"""Log lines: their formats, one line per job with what an operator needs, never a job's
output or a secret, and a sandbox that cannot be set up logged with its cause."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

import grpc
import pytest

from gristmill.client import Client
from gristmill.languages.registry import REPO_ROOT
from gristmill.observability.logs import (
    ConsoleFormatter,
    JsonFormatter,
    LogfmtFormatter,
    redact,
)
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.observability.conftest import c_job

SECRET = "hunter2-" + uuid.uuid4().hex
ECHO = 'name="$1"\necho "output $name $TOKEN"\necho "err $name" >&2\n'


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("gristmill.jobs", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(fields)
    return record


def test_json_lines_carry_the_records_fields():
    line = JsonFormatter().format(_record("job finished", job_id="a1", warm=True, run_ms=9))
    parsed = json.loads(line)
    assert parsed["msg"] == "job finished" and parsed["level"] == "info"
    assert parsed["logger"] == "gristmill.jobs" and parsed["ts"].endswith("Z")
    assert (parsed["job_id"], parsed["warm"], parsed["run_ms"]) == ("a1", True, 9)


def test_logfmt_quotes_only_what_needs_it():
    line = LogfmtFormatter().format(_record("job finished", job_id="a1", detail="a b", warm=False))
    assert 'msg="job finished"' in line
    assert "job_id=a1" in line and 'detail="a b"' in line and "warm=false" in line


def test_the_console_form_is_one_readable_line():
    line = ConsoleFormatter().format(_record("job finished", verdict="SUCCESS"))
    assert "INFO" in line and "job finished" in line and "verdict=SUCCESS" in line
    assert "\n" not in line


def test_credentials_are_masked_in_every_format():
    dsn = "postgresql://app:s3cret@db/jobs password=s3cret token: abc"
    for formatter in (JsonFormatter(), LogfmtFormatter(), ConsoleFormatter()):
        line = formatter.format(_record(f"connect failed: {dsn}", dsn=dsn))
        assert "s3cret" not in line and "abc" not in line, line
    assert redact("http://127.0.0.1:4317") == "http://127.0.0.1:4317"


def _records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_one_line_per_job_with_its_facts_and_nothing_of_its_data(real_config, log_lines):
    config = real_config(max_concurrent_jobs=2)
    with BackgroundServer(config) as address, Client(address) as client:
        job_id = f"logged-{uuid.uuid4().hex}"
        outcome = client.execute(
            "bash", ECHO, {"name": SECRET}, env={"TOKEN": SECRET}, job_id=job_id, timeout_s=60
        )
        assert outcome.verdict == pb.SUCCESS, outcome
        assert SECRET.encode() in outcome.stdout.data
    text = log_lines()
    assert SECRET not in text and "output" not in text and "err " not in text
    records = _records(text)
    jobs = [r for r in records if r.get("job_id") == job_id]
    assert len(jobs) == 1, jobs
    line = jobs[0]
    assert line["msg"] == "job finished" and line["level"] == "info"
    assert line["tenant"] == "anonymous" and line["language"] == "bash"
    assert line["verdict"] == "SUCCESS" and line["sandbox"] == outcome.sandbox
    assert isinstance(line["warm"], bool)
    for phase in ("queued", "prepare", "sandbox_setup", "run", "resolve", "install", "build"):
        assert isinstance(line[f"{phase}_ms"], int)
    assert line["run_ms"] == outcome.usage.phases.run_ms
    messages = [r["msg"] for r in records]
    assert messages.index("server started") < messages.index("job finished")
    assert messages[-3:] == ["server draining", "server drained", "server stopped"]


def test_a_compiled_job_logs_whether_its_build_was_cached(real_config, runtimes_dir, log_lines):
    source = c_job()
    config = real_config(runtimes_dir=runtimes_dir)
    with BackgroundServer(config) as address, Client(address) as client:
        ids = [f"built-{uuid.uuid4().hex}" for _ in range(2)]
        for job_id in ids:
            outcome = client.execute("c", source, job_id=job_id, timeout_s=120)
            assert outcome.verdict == pb.SUCCESS, outcome
    lines = {r["job_id"]: r for r in _records(log_lines()) if r.get("msg") == "job finished"}
    assert [lines[job_id]["build_cached"] for job_id in ids] == [False, True]


def _broken_profiles(tmp_path: Path) -> Path:
    """The shipped profiles, Bash's asking for a mount whose source does not exist."""
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO_ROOT / "sandbox" / "profiles", profiles)
    with (profiles / "bash.toml").open("a") as delta:
        delta.write('\n[[mount]]\nsource = "/nonexistent/gristmill-missing"\ntarget = "/missing"\n')
    return profiles


def test_a_sandbox_that_cannot_be_set_up_is_logged_as_an_error_with_its_cause(
    real_config, runtimes_dir, tmp_path, log_lines
):
    config = real_config(
        runtimes_dir=runtimes_dir,
        profiles_dir=_broken_profiles(tmp_path),
        **{"pool.enabled": False},
    )
    with BackgroundServer(config) as address, Client(address) as client:
        job_id = f"broken-{uuid.uuid4().hex}"
        outcome = client.execute("bash", "echo hi\n", job_id=job_id, timeout_s=60)
    assert outcome.verdict == pb.SANDBOX_ERROR, outcome
    [line] = [r for r in _records(log_lines()) if r.get("job_id") == job_id]
    assert line["level"] == "error" and line["verdict"] == "SANDBOX_ERROR"
    assert line["detail"] == outcome.detail and "/missing" in str(line["detail"])


def test_the_services_own_failure_is_logged_with_its_cause(fake_server, log_lines):
    address, _runner = fake_server()
    with Client(address) as client, pytest.raises(grpc.RpcError) as failed:
        client.execute("fake", "crash", job_id="crashes")
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    [line] = [r for r in _records(log_lines()) if r.get("job_id") == "crashes"]
    assert line["level"] == "error" and line["language"] == "fake"
    assert line["cause"] == "RuntimeError: the fake runner crashed"
    assert "Traceback" in str(line["error"])


def test_a_repeated_job_id_is_one_job_and_one_line(fake_server, log_lines):
    address, runner = fake_server()
    with Client(address) as client:
        for _ in range(2):
            client.execute("fake", "now", job_id="once")
    assert len(runner.calls) == 1
    lines = [r for r in _records(log_lines()) if r.get("job_id") == "once"]
    assert [line["verdict"] for line in lines] == ["SUCCESS"]
