"""The `gristmill` command, called in-process: run (embedded and --target), runtimes, demo."""

from __future__ import annotations

import io
import json
import sys

import pytest

from gristmill import cli
from gristmill.cli import main
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb

ADD = "def main(a: int, b: int = 2):\n    print('adding')\n    return a + b\n"


@pytest.fixture
def script(tmp_path):
    def write(code: str, name: str = "job.py"):
        path = tmp_path / name
        path.write_text(code)
        return path

    return write


@pytest.fixture
def work_dir(real_config):
    return str(real_config().work_dir)


def test_run_embedded_prints_output_and_result_and_exits_0(script, work_dir, capsys):
    status = main(["run", str(script(ADD)), "--arg", "a=40", "--work-dir", work_dir])
    out = capsys.readouterr().out
    assert status == 0
    assert "adding\n" in out
    assert "result: 42" in out


def test_run_json_prints_the_outcome_in_protobufs_json_mapping(script, work_dir, capsys):
    status = main(
        ["run", str(script(ADD)), "--args", '{"a": 1, "b": 1}', "--json", "--work-dir", work_dir]
    )
    outcome = json.loads(capsys.readouterr().out)
    assert status == 0
    assert outcome["verdict"] == "SUCCESS"
    assert outcome["resultJson"] == "2"


def test_run_exits_1_when_the_job_fails(script, work_dir, capsys):
    status = main(["run", str(script("def main():\n    1 / 0\n")), "--work-dir", work_dir])
    assert status == 1
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_run_against_a_target_server(script, real_config, capsys):
    with BackgroundServer(real_config()) as address:
        status = main(["run", str(script(ADD)), "--arg", "a=1", "--target", address])
    assert status == 0
    assert "result: 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--args", "[1]"], "--args must be a JSON object"),
        (["--arg", "novalue"], "expected NAME=VALUE"),
        (["--memory-mb", "1000000"], "job.limits.memory_bytes"),
    ],
)
def test_run_exits_2_with_a_clear_message_on_usage_errors(script, work_dir, capsys, extra, message):
    status = main(["run", str(script(ADD)), "--work-dir", work_dir, *extra])
    assert status == 2
    assert message in capsys.readouterr().err


def test_run_exits_2_for_a_file_of_no_known_language(script, capsys):
    status = main(["run", str(script("x", name="job.cobol"))])
    assert status == 2
    assert "--lang" in capsys.readouterr().err


def test_runtimes_lists_the_languages(work_dir, capsys):
    assert main(["runtimes", "--work-dir", work_dir]) == 0
    out = capsys.readouterr().out
    assert "python" in out and "bash" in out


def test_demo_runs_every_runtimes_example(work_dir, capsys):
    status = main(["demo", "--work-dir", work_dir])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "python" in out and "SUCCESS" in out


def test_doctor_reports_every_check(capsys):
    status = main(["doctor"])
    out = capsys.readouterr().out
    assert status in (0, 1)
    for check in ("user namespaces", "seccomp", "cgroups", "nsjail", "sandbox backend"):
        assert check in out


YAML_JOB = "import yaml\n\n\ndef main():\n    return yaml.safe_load('a: [1, 2]')\n"


def test_run_shows_dependency_progress_as_plain_lines_off_a_terminal(script, work_dir, capsys):
    assert main(["run", str(script(YAML_JOB)), "--work-dir", work_dir]) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("resolve")]
    assert progress, captured.err
    assert "\x1b[" not in captured.err
    assert '{"a": [1, 2]}' in captured.out


def test_resolve_prints_a_hashed_lockfile_and_run_replays_it(script, work_dir, tmp_path, capsys):
    lockfile = tmp_path / "requirements.lock"
    source = str(script(YAML_JOB))
    assert main(["resolve", source, "--work-dir", work_dir, "-o", str(lockfile)]) == 0
    assert "pyyaml" in capsys.readouterr().err.lower()
    text = lockfile.read_text()
    assert "pyyaml==" in text.lower()
    assert "--hash=sha256:" in text
    saved = tmp_path / "used.lock"
    argv = ["run", source, "--work-dir", work_dir, "--lockfile", str(lockfile)]
    assert main([*argv, "--save-lockfile", str(saved), "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["verdict"] == "SUCCESS"
    assert "resolveMs" not in outcome["usage"]["phases"]
    assert saved.read_text() == text


def test_resolve_of_a_package_that_does_not_exist_exits_1(script, work_dir, capsys):
    code = "# /// script\n# dependencies = ['gristmill-no-such-package-x9']\n# ///\n"
    assert main(["resolve", str(script(code + YAML_JOB)), "--work-dir", work_dir]) == 1
    assert "DEPENDENCY_ERROR" in capsys.readouterr().err


class _Terminal(io.TextIOWrapper):
    """A text stream that says it is a terminal; what reached its bytes is `raw_bytes`."""

    def __init__(self) -> None:
        self.raw_bytes = io.BytesIO()
        super().__init__(self.raw_bytes, encoding="utf-8")

    def isatty(self) -> bool:
        return True

    def getvalue(self) -> str:
        self.flush()
        return self.raw_bytes.getvalue().decode()


def test_run_neutralises_a_jobs_escape_sequences_on_a_terminal(monkeypatch):
    out, err = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    title, clipboard = "\x1b]0;owned\x07", "\x1b]52;c;b3duZWQ=\x07"
    cli._print_outcome(
        pb.Outcome(
            verdict=pb.ERROR,
            stdout=pb.Output(data=f"{title}line\n".encode()),
            error=pb.JobError(name="E", message=f"{clipboard}\x1b[2J\x9b2J"),
        )
    )
    shown = out.getvalue() + err.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "\\x1b]0;owned\\x07line\n" in out.getvalue()
