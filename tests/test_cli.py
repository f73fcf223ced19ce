"""The `gristmill` command, called in-process (and as a process where signals and live
output matter): run (embedded, --target, the local server), resolve, describe, cancel,
runtimes, doctor, demo, serve, --json, help."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill import render
from gristmill.cli import _build_parser, main
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb


@pytest.fixture(autouse=True)
def embedded(monkeypatch):
    """Each command gets a server of its own unless a test says otherwise."""
    monkeypatch.setenv("GRISTMILL_TARGET", "embedded")


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
    assert outcome["result"] == 2
    assert outcome["stdout"]["data"] == "adding\n"
    assert isinstance(outcome["usage"]["wall_time_ms"], int)
    assert outcome["usage"]["phases"]["resolve_ms"] == 0  # present although zero
    assert outcome["error"] is None and outcome["exit_code"] == 0


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
    assert outcome["usage"]["phases"]["resolve_ms"] == 0
    assert saved.read_text() == text


def test_resolve_of_a_package_that_does_not_exist_exits_1(script, work_dir, capsys):
    code = "# /// script\n# dependencies = ['gristmill-no-such-package-x9']\n# ///\n"
    assert main(["resolve", str(script(code + YAML_JOB)), "--work-dir", work_dir]) == 1
    assert "DEPENDENCY_ERROR" in capsys.readouterr().err


def test_json_errors_have_one_shape_and_exit_2(script, capsys):
    status = main(["run", str(script(ADD)), "--args", "[1]", "--json"])
    assert status == 2
    assert json.loads(capsys.readouterr().out) == {
        "failure": {"code": "USAGE", "message": "--args must be a JSON object", "hint": ""}
    }


def test_network_refused_says_how_to_allow_it(script, work_dir, capsys):
    status = main(["run", str(script(ADD)), "--arg", "a=1", "--network", "--work-dir", work_dir])
    err = capsys.readouterr().err
    assert status == 2
    assert "job.limits.network" in err
    assert "GRISTMILL_MAX_LIMITS_NETWORK=true" in err


def test_run_passes_env_files_and_limits(script, work_dir, tmp_path, capsys):
    data = tmp_path / "data.txt"
    data.write_text("from a file")
    code = (
        "import os\n\n\ndef main():\n"
        "    return [os.environ['GREETING'], open('input.txt').read()]\n"
    )
    argv = ["run", str(script(code)), "--work-dir", work_dir, "--json"]
    argv += ["--env", "GREETING=hi", "--file", f"{data}:input.txt"]
    argv += ["--cpu-ms", "5000", "--processes", "16", "--output-bytes", "4096"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["result"] == ["hi", "from a file"]


def test_describe_prints_the_parameters(script, work_dir, capsys):
    assert main(["describe", str(script(ADD)), "--work-dir", work_dir, "--json"]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["entry_point"] == "main"
    assert set(response["parameters_schema"]["properties"]) == {"a", "b"}


def test_cancel_of_a_job_not_running_exits_1(work_dir, capsys):
    assert main(["cancel", "no-such-job", "--work-dir", work_dir, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"cancelled": False}


def test_runtimes_and_doctor_as_json(work_dir, capsys):
    assert main(["runtimes", "--work-dir", work_dir, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {"python", "bash"} <= {r["language"] for r in listing["runtimes"]}
    assert main(["doctor", "--json"]) in (0, 1)
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert {"name", "status", "detail"} == set(checks[0])


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    choices: dict[str, argparse.ArgumentParser] = action.choices  # type: ignore[assignment]
    return choices


@pytest.mark.parametrize("name", [n for n in _subcommands() if n != "conformance"])
def test_help_of_every_command_has_examples_exit_codes_and_plain_metavars(name):
    command = _subcommands()[name]
    text = command.format_help()
    assert "examples:" in text and "exit status:" in text and "130" in text
    for action in command._actions:
        if action.option_strings and action.help != "show this help message and exit":
            assert action.help, f"{name} {action.option_strings} has no help"
        assert "." not in str(action.metavar or ""), action.metavar


def test_serve_on_a_busy_port_says_so_in_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use" in err


SLOW = "import time\n\n\ndef main():\n    print('first', flush=False)\n    time.sleep(60)\n"


def test_run_streams_output_live_and_ctrl_c_cancels_with_130(script, work_dir):
    argv = [sys.executable, "-m", "gristmill.cli", "run", str(script(SLOW))]
    process = subprocess.Popen(
        [*argv, "--work-dir", work_dir, "--timeout-ms", "120000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "first\n"  # while the job still sleeps
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "cancelled" in err and "Traceback" not in err


def test_a_local_server_is_started_once_and_reused(script, work_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("GRISTMILL_TARGET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    argv = ["run", str(script(ADD)), "--arg", "a=1", "--work-dir", work_dir]
    try:
        assert main(argv) == 0
        assert "starting a local server" in capsys.readouterr().err
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert "starting" not in captured.err and "result: 3" in captured.out
        sockets = list((tmp_path / "run" / "gristmill").glob("*.sock"))
        assert len(sockets) == 1 and Path(sockets[0]).is_socket()
    finally:
        assert main(["stop", "--work-dir", work_dir]) == 0
    assert "stopped the local server" in capsys.readouterr().out
    assert not list((tmp_path / "run" / "gristmill").glob("*.sock"))
    assert os.environ.get("GRISTMILL_TARGET") is None


@pytest.mark.parametrize(
    ("code", "result"),
    [
        ("echo last\necho '{\"n\": 2}' > ./result.json\n", {"n": 2}),
        ("echo '[1]' >&3\necho '{\"n\": 2}' > result.json\n", [1]),  # fd 3 comes first
        ("echo last\n", "last"),
    ],
)
def test_bash_result_from_fd_3_then_result_json_then_the_last_line(
    script, work_dir, capsys, code, result
):
    assert main(["run", str(script(code, name="job.sh")), "--work-dir", work_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == result


def test_resolve_shows_requires_python_apart_and_each_dependency_on_its_line(
    script, work_dir, capsys
):
    code = (
        '# /// script\n# requires-python = ">=3.8"\n# dependencies = [\n#   "pyyaml",\n# ]\n# ///\n'
    )
    assert main(["resolve", str(script(code + YAML_JOB)), "--work-dir", work_dir]) == 0
    err = capsys.readouterr().err
    assert "requires python>=3.8 (script metadata, line 2)" in err
    assert "script metadata, line 4" in err


def test_serve_exits_by_itself_after_its_idle_time(work_dir, tmp_path):
    sock = tmp_path / "idle.sock"
    argv = [sys.executable, "-m", "gristmill.cli", "serve", "--address", f"unix:{sock}"]
    process = subprocess.run(
        [*argv, "--idle-exit-s", "1", "--work-dir", work_dir],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert "no call for 1 s: exiting" in process.stderr
    assert not sock.exists()


def test_an_unreachable_target_fails_fast_with_a_hint(script, monkeypatch, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("GRISTMILL_TARGET", f"127.0.0.1:{port}")
    assert main(["run", str(script(ADD)), "--json"]) == 2
    failure = json.loads(capsys.readouterr().out)["failure"]
    assert failure["code"] == "UNAVAILABLE" and "server running" in failure["hint"]


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
    render.write_output(out, f"{title}line\n".encode())
    render.print_verdict(
        pb.Outcome(
            verdict=pb.ERROR, error=pb.JobError(name="E", message=f"{clipboard}\x1b[2J\x9b2J")
        )
    )
    shown = out.getvalue() + err.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "\\x1b]0;owned\\x07line\n" in out.getvalue()


def test_run_takes_stdin_context_and_script_argv_and_saves_output_files(
    script, work_dir, tmp_path, monkeypatch, capsys
):
    code = (
        "import os, sys\n"
        "print(sys.argv[1:], sys.stdin.read().split(), os.environ['GRISTMILL_CTX_TEAM'])\n"
        "os.makedirs('out')\n"
        "open('out/report.txt', 'w').write('made in the job')\n"
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one two\n")))
    argv = ["run", str(script(code)), "--work-dir", work_dir, "--stdin", "-"]
    argv += ["--context", "TEAM=blue", "--output-file", "out/*.txt"]
    argv += ["--output-dir", str(tmp_path / "results"), "--script", "--", "a", "--b"]
    assert main(argv) == 0
    assert "['a', '--b'] ['one', 'two'] blue" in capsys.readouterr().out
    assert (tmp_path / "results" / "out" / "report.txt").read_text() == "made in the job"


def test_script_arguments_without_script_are_a_usage_error(script, work_dir, capsys):
    assert main(["run", str(script(ADD)), "--work-dir", work_dir, "--", "a"]) == 2
    assert "--script" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in _subcommands() if n != "conformance"])
def test_no_command_takes_a_flag_for_a_longer_one(name):
    # `enqueue --arg n=1` was read as `--args n=1` and ended in a JSON error.
    assert not _subcommands()[name].allow_abbrev


def test_a_prefix_of_a_flag_is_refused_not_taken_for_it(tmp_path, capsys):
    job = tmp_path / "job.sh"
    job.write_text("echo hi\n")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(job), "--timeout", "5"])  # --timeout-ms is the flag
    assert exit_.value.code == 2
    assert "unrecognized arguments: --timeout" in capsys.readouterr().err
