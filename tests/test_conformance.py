"""The conformance suite: its loader and checker on their own, then every case against
a real server started here.

`test_case_against_server` is the suite proper: one test per (case, language) from
gristmill/conformance/suite/*.toml. A failing attack case there is a bug in the server or its
sandbox, never a reason to weaken the case.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from gristmill.config import load_config
from gristmill.conformance import runner
from gristmill.conformance.cases import (
    Case,
    CaseFileError,
    coverage,
    load_case_file,
    load_cases,
    not_applicable,
)
from gristmill.conformance.checks import check_outcome, json_equal
from gristmill.conformance.report import coverage_lines, describe_outcome
from gristmill.conformance.results import CaseResult
from gristmill.conformance.runner import (
    default_cases_dir,
    language_case_files,
    run_cases,
)
from gristmill.errors import SandboxFailure
from gristmill.languages import Registry
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2, runtime_pb2_grpc
from tests.conftest import sandbox_work_dir

ALL_CASES = load_cases(default_cases_dir(), language_case_files())


def write_cases(directory: Path, text: str, name: str = "cases.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def one_case(tmp_path: Path, text: str) -> Case:
    [case] = load_case_file(write_cases(tmp_path, text))
    return case


# The loader


SHARED_TOPICS = ("values", "arguments", "errors", "output", "limits", "attacks")
"""Topics every language must cover; others (e.g. dependencies) concern some languages only."""


def test_every_shared_topic_covers_python_and_bash():
    topics: dict[str, set[str]] = {}
    for case in ALL_CASES:
        topics.setdefault(case.source.stem, set()).add(case.language)
    for topic in SHARED_TOPICS:
        assert {"python", "bash"} <= topics.get(topic, set()), topic


def test_a_case_with_code_per_language_expands_once_per_language(tmp_path):
    cases = load_case_file(
        write_cases(
            tmp_path,
            """
            [[case]]
            name = "attack"
            code.python = "def main(): return 1"
            code.bash = "echo 1"
            limits = { wall_time_ms = 500, network = false }
            expect.verdict = "SUCCESS"
            expect.result = 1
            """,
        )
    )
    assert [case.id for case in cases] == ["attack[python]", "attack[bash]"]
    assert all(case.limits.wall_time_ms == 500 for case in cases)
    assert all(case.expect.result_json == "1" for case in cases)


def test_expect_for_overrides_one_language_only(tmp_path):
    python, bash = load_case_file(
        write_cases(
            tmp_path,
            """
            [[case]]
            name = "exit"
            code.python = "def main(): return 1"
            code.bash = "exit 3"
            expect.verdict = "SUCCESS"
            expect_for.bash.verdict_in = ["ERROR", "KILLED_BY_SIGNAL"]
            expect_for.bash.exit_code = 3
            """,
        )
    )
    assert python.expect.verdicts == ("SUCCESS",)
    assert python.expect.exit_code is None
    assert bash.expect.verdicts == ("ERROR", "KILLED_BY_SIGNAL")
    assert bash.expect.exit_code == 3


def test_args_json_keeps_big_integers_as_text(tmp_path):
    case = one_case(
        tmp_path,
        """
        [[case]]
        name = "big"
        language = "python"
        code = "def main(n): return n"
        args_json = '{"n": 1180591620717411303424}'
        expect.verdict = "SUCCESS"
        expect.result_json = "1180591620717411303424"
        """,
    )
    assert case.args is None
    assert case.args_json == '{"n": 1180591620717411303424}'


MALFORMED = {
    "unknown key": ('code = "x"\nlanguage = "python"\nexpect.verdit = "SUCCESS"', "verdit"),
    "no verdict": ('code = "x"\nlanguage = "python"\nexpect.stdout = "x"', "exactly one"),
    "both verdicts": (
        'code = "x"\nlanguage = "python"\nexpect.verdict = "ERROR"\nexpect.verdict_in = ["ERROR"]',
        "exactly one",
    ),
    "unknown verdict": ('code = "x"\nlanguage = "python"\nexpect.verdict = "OK"', "'OK'"),
    "language missing": ('code = "x"\nexpect.verdict = "SUCCESS"', "language is required"),
    "language and table": (
        'language = "python"\ncode.python = "x"\nexpect.verdict = "SUCCESS"',
        "leave out language",
    ),
    "bad regex": (
        'code = "x"\nlanguage = "python"\nexpect.verdict = "SUCCESS"\nexpect.stdout = "("',
        "not a valid regex",
    ),
    "args and args_json": (
        'code = "x"\nlanguage = "python"\nargs = {}\nargs_json = "{}"\nexpect.verdict = "SUCCESS"',
        "not both",
    ),
    "args_json not an object": (
        'code = "x"\nlanguage = "python"\nargs_json = "[1]"\nexpect.verdict = "SUCCESS"',
        "JSON object",
    ),
    "limit not a number": (
        'code = "x"\nlanguage = "python"\nlimits = { wall_time_ms = "1s" }\n'
        'expect.verdict = "SUCCESS"',
        "limits.wall_time_ms must be an integer",
    ),
    "unknown limit": (
        'code = "x"\nlanguage = "python"\nlimits = { wall_ms = 1 }\nexpect.verdict = "SUCCESS"',
        "wall_ms",
    ),
    "placeholder without need": (
        'code = "{service_port}"\nlanguage = "python"\nexpect.verdict = "SUCCESS"',
        "needs",
    ),
    "need without placeholder": (
        'code = "x"\nlanguage = "python"\nneeds = ["service_port"]\nexpect.verdict = "SUCCESS"',
        "has no",
    ),
    "expect_for unknown language": (
        'code = "x"\nlanguage = "python"\nexpect.verdict = "SUCCESS"\n'
        "expect_for.bash.exit_code = 1",
        "expect_for.bash",
    ),
    "result not JSON": (
        'code = "x"\nlanguage = "python"\nexpect.verdict = "SUCCESS"\nexpect.result_json = "{"',
        "not JSON",
    ),
}


@pytest.mark.parametrize("body, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_case_names_file_case_and_key(tmp_path, body, message):
    path = write_cases(tmp_path, f'[[case]]\nname = "broken"\n{body}\n')
    with pytest.raises(CaseFileError, match="broken") as raised:
        load_case_file(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_invalid_toml_is_a_case_file_error(tmp_path):
    with pytest.raises(CaseFileError, match="cannot be read as TOML"):
        load_case_file(write_cases(tmp_path, "[[case]\n"))


def test_a_name_defined_twice_for_one_language_is_refused(tmp_path):
    case = '[[case]]\nname = "twice"\nlanguage = "python"\ncode = "x"\nexpect.verdict = "ERROR"\n'
    write_cases(tmp_path, case, "a.toml")
    write_cases(tmp_path, case, "b.toml")
    with pytest.raises(CaseFileError, match="already defined"):
        load_cases(tmp_path)


SHARED_TIMEOUT = """
[[case]]
name = "limits.timeout"
code.python = "import time"
partner.python = "def main(): return 1"
limits = { wall_time_ms = 1000 }
tags = ["attack"]
expect.verdict = "TIMEOUT"
expect.within_ms = 9000
"""


def test_a_translation_takes_all_but_its_code_from_the_shared_case(tmp_path):
    write_cases(tmp_path / "shared", SHARED_TIMEOUT)
    own = write_cases(
        tmp_path / "runtimes" / "cobol",
        '[[translation]]\nname = "limits.timeout"\ncode = "SLEEP"\npartner = "OK"\n'
        "expect.within_ms = 5000\n"
        '[[case]]\nname = "cobol.own"\ncode = "X"\nexpect.verdict = "SUCCESS"\n',
        "conformance.toml",
    )
    cases = {c.id: c for c in load_cases(tmp_path / "shared", [own])}
    translated = cases["limits.timeout[cobol]"]
    assert (translated.code, translated.partner) == ("SLEEP", "OK")
    assert translated.limits.wall_time_ms == 1000 and translated.is_attack
    assert translated.expect.verdicts == ("TIMEOUT",) and translated.expect.within_ms == 5000
    assert cases["limits.timeout[python]"].expect.within_ms == 9000
    assert cases["cobol.own[cobol]"].language == "cobol"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[translation]]\nname = "nope"\ncode = "X"\n', "names no shared case"),
        ('[[translation]]\nname = "limits.timeout"\ncode = "X"\n', "partner is required"),
        (
            '[[translation]]\nname = "limits.timeout"\ncode = "X"\npartner = "Y"\nargs = {}\n',
            "unknown key",
        ),
    ],
)
def test_a_bad_translation_is_refused(tmp_path, body, message):
    write_cases(tmp_path / "shared", SHARED_TIMEOUT)
    own = write_cases(tmp_path / "runtimes" / "cobol", body, "conformance.toml")
    with pytest.raises(CaseFileError, match=message):
        load_cases(tmp_path / "shared", [own])


def test_coverage_names_what_each_language_lacks_unless_declared_not_applicable(tmp_path):
    write_cases(tmp_path / "shared", SHARED_TIMEOUT)
    own = write_cases(
        tmp_path / "runtimes" / "cobol",
        '[not_applicable]\n"limits.timeout" = "COBOL never sleeps"\n'
        '[[case]]\nname = "cobol.own"\ncode = "X"\nexpect.verdict = "SUCCESS"\n',
        "conformance.toml",
    )
    cases = load_cases(tmp_path / "shared", [own])
    assert coverage(cases) == {"cobol": ["limits.timeout"], "python": ["cobol.own"]}
    assert coverage(cases, not_applicable([own])) == {"cobol": [], "python": ["cobol.own"]}
    shared = tmp_path / "shared"
    assert coverage(cases, not_applicable([own]), shared) == {"cobol": [], "python": []}


# The checker


def outcome(**fields) -> runtime_pb2.Outcome:
    return json_format.ParseDict(fields, runtime_pb2.Outcome())


def expectation(tmp_path: Path, expect: str):
    return one_case(
        tmp_path, f'[[case]]\nname = "c"\nlanguage = "python"\ncode = "x"\n{expect}\n'
    ).expect


def test_a_matching_outcome_has_no_problems(tmp_path):
    expect = expectation(
        tmp_path,
        'expect.verdict = "ERROR"\nexpect.error_name = "ZeroDivisionError"\n'
        'expect.error_message = "division"\nexpect.error_line = 2\n'
        "expect.stdout = '\\Abefore\\n\\Z'\nexpect.stdout_truncated = false\n"
        "expect.within_ms = 1000",
    )
    got = outcome(
        verdict="ERROR",
        error={
            "name": "ZeroDivisionError",
            "message": "division by zero",
            "stack": [{"file": "main.py", "line": 7}, {"file": "main.py", "line": 2}],
        },
        stdout={"data": "YmVmb3JlCg==", "totalBytes": 7},
    )
    assert check_outcome(expect, got, elapsed_ms=20) == []


def test_each_difference_is_named(tmp_path):
    expect = expectation(
        tmp_path,
        'expect.verdict_in = ["PROCESS_LIMIT", "TIMEOUT"]\nexpect.result = 1\n'
        'expect.stderr = "warn"\nexpect.stderr_truncated = true\nexpect.exit_code = 3\n'
        "expect.signal = 9\nexpect.error_line = 2\nexpect.within_ms = 100",
    )
    got = outcome(
        verdict="SUCCESS",
        resultJson="1.0",
        exitCode=0,
        error={"name": "E", "stack": [{"file": "main.py", "line": 5, "function": "f"}]},
    )
    problems = check_outcome(expect, got, elapsed_ms=250)
    assert [p.split(":")[0] for p in problems] == [
        "verdict",
        "result",
        "stderr",
        "stderr.truncated",
        "error line",
        "exit_code",
        "signal",
        "answered after 250 ms, expected within 100",
    ]
    assert "PROCESS_LIMIT or TIMEOUT, got SUCCESS" in problems[0]
    assert "main.py:5 (f)" in problems[4]


def test_a_missing_error_or_result_is_a_problem(tmp_path):
    expect = expectation(
        tmp_path, 'expect.verdict = "ERROR"\nexpect.error_name = "E"\nexpect.result_json = "null"'
    )
    assert check_outcome(expect, outcome(verdict="ERROR"), elapsed_ms=1) == [
        "result: expected 'null', got no result_json",
        "error: expected one, got none",
    ]


def test_nan_in_a_result_is_not_json(tmp_path):
    expect = expectation(tmp_path, 'expect.verdict = "SUCCESS"\nexpect.result_json = "null"')
    [problem] = check_outcome(expect, outcome(verdict="SUCCESS", resultJson="NaN"), 1)
    assert "invalid JSON" in problem


@pytest.mark.parametrize(
    "left, right, equal",
    [
        (1, 1, True),
        (1, 1.0, False),
        (1, True, False),
        (0, False, False),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ([1, 2], [2, 1], False),
        (2**70, 2**70, True),
    ],
)
def test_json_equal_is_exact(left, right, equal):
    assert json_equal(left, right) is equal


# The runner, against a fake server that answers from the job itself


class FakeRuntime(runtime_pb2_grpc.RuntimeServicer):
    """Echoes the job's arguments as the result and its code as stdout; "wait" waits
    for Cancel. Python is available, bash is not."""

    def __init__(self) -> None:
        self.cancelled: dict[str, threading.Event] = {}

    def ListRuntimes(self, request, context):
        return runtime_pb2.ListRuntimesResponse(
            runtimes=[
                runtime_pb2.RuntimeInfo(language="python", available=True),
                runtime_pb2.RuntimeInfo(
                    language="bash", available=False, unavailable_reason="no bash here"
                ),
            ]
        )

    def Execute(self, request, context):
        job = request.job
        if job.code == "wait":
            event = self.cancelled.setdefault(job.id, threading.Event())
            cancelled = event.wait(timeout=10)
            verdict = runtime_pb2.CANCELLED if cancelled else runtime_pb2.TIMEOUT
            return runtime_pb2.Outcome(job_id=job.id, verdict=verdict)
        args = job.args_json or json_format.MessageToJson(job.args)
        return runtime_pb2.Outcome(
            job_id=job.id,
            verdict=runtime_pb2.SUCCESS,
            result_json=args,
            stdout=runtime_pb2.Output(data=job.code.encode()),
        )

    def Cancel(self, request, context):
        event = self.cancelled.setdefault(request.job_id, threading.Event())
        event.set()
        return runtime_pb2.CancelResponse(cancelled=True)


@pytest.fixture
def fake_target():
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    runtime_pb2_grpc.add_RuntimeServicer_to_server(FakeRuntime(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


FAKE_CASES = """
[[case]]
name = "echo.big_integer"
language = "python"
code = "echo"
args_json = '{"n": 1180591620717411303424}'
expect.verdict = "SUCCESS"
expect.result_json = '{"n": 1180591620717411303424}'

[[case]]
name = "echo.wrong"
language = "python"
code = "echo"
args = { s = "x" }
expect.verdict = "SUCCESS"
expect.result = { s = "y" }

[[case]]
name = "echo.port"
needs = ["service_port"]
code.python = "{service_host} {service_port}"
code.bash = "{service_host} {service_port}"
expect.verdict = "SUCCESS"
expect.stdout = '\\A127\\.0\\.0\\.1 \\d+\\Z'

[[case]]
name = "echo.cancel"
language = "python"
code = "wait"
cancel_after_ms = 100
expect.verdict = "CANCELLED"
expect.within_ms = 5000
"""


def test_run_cases_sends_each_job_and_checks_its_outcome(tmp_path, fake_target):
    cases = [c for c in load_case_file(write_cases(tmp_path, FAKE_CASES)) if c.language == "python"]
    results = run_cases(fake_target, cases)
    assert [(r.case.name, r.passed) for r in results] == [
        ("echo.big_integer", True),
        ("echo.wrong", False),
        ("echo.port", True),
        ("echo.cancel", True),
    ]
    assert results[1].problems == ('result: expected \'{"s": "y"}\', got \'{\\n  "s": "x"\\n}\'',)
    assert results[2].outcome is not None
    assert results[2].outcome.stdout.data == f"127.0.0.1 {fake_target.split(':')[1]}".encode()


def test_main_reports_json_and_fails_on_any_failure(tmp_path, fake_target, capsys):
    cases_dir = tmp_path / "cases"
    write_cases(cases_dir, FAKE_CASES)
    assert runner.main(["--target", fake_target, "--cases", str(cases_dir), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["passed"] is False
    assert document["unavailable"] == {"bash": "no bash here"}
    assert document["totals"] == {"python": {"passed": 3, "ran": 4}}
    failed = [r for r in document["results"] if not r["passed"]]
    assert [r["case"] for r in failed] == ["echo.wrong"]
    assert failed[0]["outcome"]["verdict"] == "SUCCESS"


def test_main_prints_a_table_and_passes_when_every_case_passes(tmp_path, fake_target, capsys):
    cases_dir = tmp_path / "cases"
    write_cases(cases_dir, FAKE_CASES)
    args = ["--target", fake_target, "--cases", str(cases_dir), "--filter", "echo.big"]
    assert runner.main(args) == 0
    captured = capsys.readouterr()
    assert "echo.big_integer" in captured.out
    assert "pass" in captured.out
    assert "1/1" in captured.out
    assert "[1/1] ok   python echo.big_integer" in captured.err  # progress while it runs


def test_main_fails_when_no_case_runs(tmp_path, fake_target, capsys):
    cases_dir = tmp_path / "cases"
    write_cases(cases_dir, FAKE_CASES)
    args = ["--target", fake_target, "--cases", str(cases_dir), "--language", "bash"]
    assert runner.main(args) == 1
    captured = capsys.readouterr()
    assert "bash: not run: no bash here" in captured.out
    assert "no case ran" in captured.err


def test_main_refuses_a_malformed_case_directory(tmp_path, fake_target, capsys):
    write_cases(tmp_path, "[[case]]\nname = 'x'\n")
    assert runner.main(["--target", fake_target, "--cases", str(tmp_path)]) == 2
    assert "code must be" in capsys.readouterr().err


# The suite proper, against a real server


SERVERS = ("process/warm", "nsjail/warm", "process/cold", "nsjail/cold")
"""Each backend with warm sandboxes (most cases run in one) and without (all start cold);
the compiled languages run against the first two only (`_runs_on`)."""
ATTACKS: dict[tuple[str, str], list[bool]] = {}
"""(server, language) -> whether each attack case run against it was contained."""
SERVER_NAMES: dict[str, str] = {}
"""The address of each server under test -> its backend and pool mode."""
WARM: dict[tuple[str, str], list[bool]] = {}
"""(server, language) -> whether each case run against it found a warm sandbox."""
AHEAD: dict[str, Ahead] = {}
"""The address of each server under test -> its cases, running ahead of their tests."""


@pytest.fixture(scope="session")
def shared_caches() -> Iterator[Path]:
    """One dependency and build cache for every server of the suite, as replicas may share
    one: each case's code is compiled (and its packages installed) once, not once a server."""
    with sandbox_work_dir() as directory:
        yield directory / "deps"


@pytest.fixture(scope="session")
def server_address(request: pytest.FixtureRequest, shared_caches: Path) -> Iterator[str]:
    """One real server per sandbox backend and pool mode, for the whole suite."""
    backend, pool = request.param.split("/")
    with sandbox_work_dir() as work_dir:
        # Compiled languages prime their build caches before the first case's deadline runs.
        overrides = {
            "address": "127.0.0.1:0",
            "work_dir": work_dir,
            "sandbox_backend": backend,
            "pool.enabled": pool == "warm",
            "deps.cache_dir": shared_caches,
            "deps.prime_at_start": True,
            # The network attack cases (attacks_network.toml) ask for the network.
            "max_limits.network": True,
        }
        config = load_config(overrides=overrides)
        try:
            server = BackgroundServer(config)
            address = server.__enter__()
        except SandboxFailure as unusable:
            pytest.skip(f"{request.param}: {unusable}")
        SERVER_NAMES[address] = request.param
        AHEAD[address] = Ahead(address, _selected_cases(request, address))
        try:
            yield address
        finally:
            AHEAD.pop(address).close()
            server.__exit__(None, None, None)


def _selected_cases(request: pytest.FixtureRequest, address: str) -> list[Case]:
    """The cases this session runs against the server at `address`, in their tests' order
    (those of a language it cannot run left out)."""
    unavailable = {
        info.language for info in runner.list_runtimes(address).runtimes if not info.available
    }
    selected = (
        item.callspec.params
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_case_against_server"
    )
    cases = [p["case"] for p in selected if p["server_address"] == SERVER_NAMES[address]]
    return [c for c in cases if isinstance(c, Case) and c.language not in unavailable]


@pytest.fixture(scope="session", autouse=True)
def attack_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """Prints, after the suite, how many attacks each backend contained per language, and
    how many cases found a warm sandbox."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not ATTACKS:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_sep("-", "attacks contained (backend/pool, language: contained/tried)")
        for (server, language), outcomes in sorted(ATTACKS.items()):
            reporter.write_line(f"{server:12} {language:10} {sum(outcomes)}/{len(outcomes)}")
        reporter.write_sep("-", "cases run in a warm sandbox (backend/pool, language: warm/run)")
        for (server, language), warm in sorted(WARM.items()):
            reporter.write_line(f"{server:12} {language:10} {sum(warm)}/{len(warm)}")
        reporter.write_sep("-", "conformance coverage (cases x languages)")
        own = language_case_files()
        holes = coverage(ALL_CASES, not_applicable(own), default_cases_dir())
        for line in coverage_lines(holes):
            reporter.write_line(line)


@pytest.fixture(scope="session")
def available_languages(server_address) -> dict[str, str]:
    """Language -> "" when it runs here, else the server's reason why not."""
    response = runner.list_runtimes(server_address)
    return {
        info.language: "" if info.available else info.unavailable_reason
        for info in response.runtimes
    }


class _Gate:
    """Lets cases run side by side, except one that must run alone: it waits for those
    running to end, and none starts until it has."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._alone_waiting = 0

    @contextlib.contextmanager
    def entered(self, alone: bool) -> Iterator[None]:
        with self._changed:
            if alone:
                self._alone_waiting += 1
                self._changed.wait_for(lambda: self._running == 0)
                self._alone_waiting -= 1
                self._running = -1
            else:
                self._changed.wait_for(lambda: self._running >= 0 and not self._alone_waiting)
                self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running = 0 if alone else self._running - 1
                self._changed.notify_all()


class Ahead:
    """Runs a server's selected cases ahead of their tests, two at a time as a queue
    worker's jobs would (`run_cases`), so that the suite takes about half the sum of its
    cases' waits (time limits, sleeps, timeouts); each test then checks its own result.
    A case with a partner job or a cancel runs alone: with another case beside it, the
    server's slots would be full and its second job would queue."""

    PARALLELISM = 2

    def __init__(self, address: str, cases: Sequence[Case]) -> None:
        self._address = address
        self._gate = _Gate()
        self._pool = ThreadPoolExecutor(self.PARALLELISM, thread_name_prefix="conformance")
        self._futures = {case.id: self._pool.submit(self._run, case) for case in cases}

    def _run(self, case: Case) -> CaseResult:
        alone = case.partner is not None or case.cancel_after_ms is not None
        with self._gate.entered(alone):
            [result] = run_cases(self._address, [case], parallelism=1)
        return result

    def result(self, case: Case) -> CaseResult:
        return self._futures[case.id].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


BUILT = frozenset(runtime.name for runtime in Registry() if runtime.spec.build is not None)
"""Languages whose jobs are built first: they run against the servers with warm sandboxes
only, where a build's first job starts cold anyway, and their cases are the slowest."""


def _runs_on(server: str, case: Case) -> bool:
    return server.endswith("/warm") or case.language not in BUILT


@pytest.mark.parametrize(
    ("server_address", "case"),
    [(server, case) for server in SERVERS for case in ALL_CASES if _runs_on(server, case)],
    ids=lambda value: value.id if isinstance(value, Case) else value,
    indirect=["server_address"],
    # Session: one server per backend and pool mode for all its cases (a narrower scope
    # would start a server per case, and no case would find a warm sandbox).
    scope="session",
)
def test_case_against_server(case, server_address, available_languages):
    reason = available_languages.get(case.language, "the server does not list it")
    if reason:
        pytest.skip(f"{case.language}: {reason}")
    result = AHEAD[server_address].result(case)
    server = SERVER_NAMES[server_address]
    if case.is_attack:
        ATTACKS.setdefault((server, case.language), []).append(result.passed)
    if result.outcome is not None:
        WARM.setdefault((server, case.language), []).append(result.outcome.warm_sandbox)
    details = "\n".join(result.problems)
    if result.outcome is not None:
        details += "\ngot:\n  " + "\n  ".join(describe_outcome(result.outcome))
    assert result.passed, f"{case.id} ({case.source.name}):\n{details}"
