"""`gristmill queue migrate|status|show|cancel`, `gristmill enqueue --wait` and
`gristmill worker` as processes, including a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from gristmill.queue import Queue
from tests.queue.conftest import ScriptedServer

GRISTMILL = [sys.executable, "-m", "gristmill"]


def gristmill(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GRISTMILL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_enqueue_and_wait_through_a_worker_that_stops_gracefully_on_sigterm(
    database: str, scripted_server: ScriptedServer, tmp_path: Path
) -> None:
    address, runner = scripted_server()
    migrated = gristmill("queue", "migrate", "--database", database)
    assert (migrated.returncode, migrated.stdout.strip()) == (0, "applied: [1, 2, 3, 4, 5, 6]")
    worker = subprocess.Popen(
        [*GRISTMILL, "worker", "--database", database, "--target", address, "--grace-s", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        job_file = tmp_path / "job.fake"
        job_file.write_text("echo")
        enqueued = gristmill(
            "enqueue", str(job_file), "--lang", "fake", "--database", database,
            "--args", '{"a": 1}', "--wait", "--wait-timeout-s", "60",
        )  # fmt: skip
        assert enqueued.returncode == 0, enqueued.stderr
        job_id, _, record = enqueued.stdout.partition("\n")
        shown = json.loads(record)
        assert (shown["id"], shown["state"], shown["result"]) == (job_id, "done", {"a": 1})

        job_file.write_text("sleep:2")
        slow = gristmill("enqueue", str(job_file), "--lang", "fake", "--database", database)
        slow_id = slow.stdout.strip()
        end = time.monotonic() + 60
        while slow_id not in runner.runs:
            assert time.monotonic() < end
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    with Queue(database) as queue:
        job = queue.get(slow_id)
    assert job is not None and (job.state, job.verdict) == ("done", "SUCCESS")
    status = gristmill("queue", "status", "--database", database)
    assert json.loads(status.stdout) == {"version": 6, "jobs": {"done": 2}}
    assert gristmill("queue", "cancel", slow_id, "--database", database).stdout.strip() == "done"
    assert gristmill("queue", "show", "nope", "--database", database).returncode == 1
    timeline = json.loads(gristmill("queue", "show", slow_id, "--database", database).stdout)[
        "timeline"
    ]
    assert timeline["queue_wait_ms"] >= 0 and timeline["claim_to_outcome_ms"] >= 2000
    assert isinstance(timeline["server_phases_ms"], dict) and timeline["attempts"] == 1
