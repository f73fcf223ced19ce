"""examples/go-worker: a Go queue worker built from the .proto's go_package calls Execute
on a real server and reads its verdict and result."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "examples" / "go-worker"

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed")


@pytest.fixture(scope="module")
def worker() -> Path:
    """The worker's binary, its Go code generated from the .proto first (as a user would)."""
    for argv in (["./generate.sh"], ["go", "build", "-o", "go-worker", "."]):
        done = subprocess.run(argv, cwd=WORKER, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    return WORKER / "go-worker"


def _work(worker: Path, target: str, *job: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [worker, *job],
        env={"GRISTMILL_TARGET": target},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_go_worker_gets_a_jobs_result(worker: Path, real_server: str):
    code = "def main(a: int, b: int):\n    print('adding')\n    return {'sum': a + b}\n"
    status, outcome = _work(worker, real_server, "python", code, '{"a": 40, "b": 2}')
    assert (status, outcome["verdict"], outcome["result"]) == (0, "SUCCESS", {"sum": 42})
    assert outcome["stdout"] == "adding\n"


def test_go_worker_gets_a_failing_jobs_verdict_as_data(worker: Path, real_server: str):
    code = "def main():\n    raise ValueError('no such thing')\n"
    status, outcome = _work(worker, real_server, "python", code, "{}")
    assert (status, outcome["verdict"], outcome["error"]) == (1, "ERROR", "no such thing")


def test_go_worker_reports_an_unreachable_server_as_a_failed_call(worker: Path):
    done = subprocess.run(
        [worker, "python", "def main(): pass", "{}"],
        env={"GRISTMILL_TARGET": "unix:/nonexistent/gristmill.sock", "GRISTMILL_TIMEOUT_S": "2"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 2 and "go-worker:" in done.stderr
