"""Shared fixtures: server configurations, a fake job runner, and servers to talk to.

The fake runner stands in for the executor where a test is about the transport, the
job table or admission; the `real_server` fixture runs jobs in the real sandbox.
Both read GRISTMILL_* variables (e.g. GRISTMILL_SANDBOX_BACKEND), like the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from gristmill.config import ServerConfig, load_config
from gristmill.isolation.backend import SandboxInfo
from gristmill.jobs.workspace import unmount_jobs_dir
from gristmill.model import Job, JobEvent, Outcome, OutputEvent, PhaseEvent, StartedEvent, Verdict
from gristmill.server import BackgroundServer

ConfigFactory = Callable[..., ServerConfig]


@pytest.fixture(autouse=True)
def _log_handlers_kept_to_their_test() -> Iterator[None]:
    """Takes away the log handler a test's in-process `gristmill serve` installed: it
    writes to that test's captured stderr, closed once the test is over, and a server
    thread that logs later would print a logging error into another test's output."""
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if type(handler).__module__ == "gristmill.observability.logs":
            root.removeHandler(handler)


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """A config bound to a free port with a private work dir; keywords are flat settings."""

    def make(**overrides: object) -> ServerConfig:
        return load_config(
            overrides={"address": "127.0.0.1:0", "work_dir": tmp_path / "work", **overrides}
        )

    return make


class FakeRunner:
    """Runs "jobs" by their code: `wait` until cancelled, `gate` until `gate` is set,
    `crash` by raising; anything else at once, its result the job's arguments.

    Every finished run is in `finished`, in order; `cancelled` is set when a run saw its
    cancel event.
    """

    def __init__(self) -> None:
        self.calls: list[Job] = []
        self.finished: list[str] = []
        self.gate = threading.Event()
        self.cancelled = threading.Event()

    def sandbox_info(self) -> SandboxInfo:
        return SandboxInfo(backend="fake", enforced_limits=("wall_time",), detail="a test double")

    async def run(
        self,
        job: Job,
        on_event: Callable[[JobEvent], None] | None = None,
        cancel: asyncio.Event | None = None,
    ) -> Outcome:
        self.calls.append(job)
        emit = on_event or (lambda _: None)
        cancel = cancel or asyncio.Event()
        emit(PhaseEvent("prepare"))
        emit(StartedEvent(pid=4242))
        emit(OutputEvent("stdout", b"out-1"))
        try:
            if job.code == "crash":
                raise RuntimeError("the fake runner crashed")
            if job.code == "gate":
                await asyncio.to_thread(self.gate.wait, 30)
            if job.code == "wait":
                await cancel.wait()
            if cancel.is_set():
                self.cancelled.set()
                return Outcome(job_id=job.id, verdict=Verdict.CANCELLED, sandbox="fake")
            emit(OutputEvent("stdout", b"out-2"))
            return Outcome(
                job_id=job.id,
                verdict=Verdict.SUCCESS,
                result_json=json.dumps(dict(job.args)),
                detail=f"run {len(self.calls)}",
                sandbox="fake",
            )
        finally:
            self.finished.append(job.id)


@pytest.fixture
def fake_runtimes(tmp_path: Path) -> Path:
    """A runtimes dir with `fake` (available) and `missing` (its toolchain is absent)."""
    root = tmp_path / "runtimes"
    for name, requires in (("fake", "/bin/sh"), ("missing", "/nonexistent/toolchain")):
        (root / name).mkdir(parents=True)
        (root / name / "runtime.toml").write_text(
            f'name = "{name}"\nextensions = [".{name}"]\nsource_file = "main.{name}"\n'
            f'run = ["/bin/sh"]\nrequires = ["{requires}"]\n'
            'version_command = ["/bin/echo", "1.0"]\n'
        )
    return root


@pytest.fixture
def fake_profiles(tmp_path: Path) -> Path:
    root = tmp_path / "profiles"
    root.mkdir()
    (root / "base.toml").write_text("")
    return root


FakeServer = Callable[..., tuple[str, FakeRunner]]


@pytest.fixture
def fake_server(
    make_config: ConfigFactory, fake_runtimes: Path, fake_profiles: Path
) -> Iterator[FakeServer]:
    """Starts servers over a `FakeRunner`; keywords are flat settings. Yields (address, runner)."""
    with_servers: list[BackgroundServer] = []

    def start(**overrides: object) -> tuple[str, FakeRunner]:
        runner = FakeRunner()
        config = make_config(runtimes_dir=fake_runtimes, profiles_dir=fake_profiles, **overrides)
        server = BackgroundServer(config, runner=runner)
        with_servers.append(server)
        return server.__enter__(), runner

    yield start
    for server in with_servers:
        server.__exit__(None, None, None)


@contextlib.contextmanager
def sandbox_work_dir() -> Iterator[Path]:
    """A work dir the jail's unprivileged user can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gristmill-test-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        remove_work_dir(path)


def remove_work_dir(path: Path) -> None:
    """Removes a work dir, unmounting the workspaces' tmpfs a server left (if killed)."""
    unmount_jobs_dir(path / "jobs", force=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def real_config() -> Iterator[ConfigFactory]:
    """Configs for servers over the real sandbox; keywords are flat settings."""
    with sandbox_work_dir() as work_dir:
        yield lambda **overrides: load_config(
            overrides={"address": "127.0.0.1:0", "work_dir": work_dir, **overrides}
        )


@pytest.fixture(scope="module")
def real_server() -> Iterator[str]:
    """A server running jobs in the real sandbox, shared by a test module."""
    with sandbox_work_dir() as work_dir:
        config = load_config(
            overrides={"address": "127.0.0.1:0", "work_dir": work_dir, "max_concurrent_jobs": 4}
        )
        with BackgroundServer(config) as address:
            yield address


# Attack tests outside the conformance data: tests marked `@pytest.mark.attack("area")`
# count in a table of their own after the suite, beside the conformance attack table.

ATTACK_TESTS: dict[str, list[bool]] = {}
"""Area -> whether each attack test of it that ran was contained (passed)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "attack(area): an attack test (it tries to break a promise of the sandbox or the "
        "service); counted per area in the table printed after the suite",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("attack")
    failed_early = report.when == "setup" and report.failed
    if marker is not None and (report.when == "call" or failed_early) and not report.skipped:
        area = str(marker.args[0]) if marker.args else "other"
        ATTACK_TESTS.setdefault(area, []).append(report.passed)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ATTACK_TESTS:
        return
    terminalreporter.write_sep("-", "attack tests contained (area: contained/tried)")
    for area, outcomes in sorted(ATTACK_TESTS.items()):
        terminalreporter.write_line(f"{area:40} {sum(outcomes)}/{len(outcomes)}")
