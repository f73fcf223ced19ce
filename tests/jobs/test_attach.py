"""`LanguagePlugin.attach` and `configure`: what a plugin provides to one job's run
sandbox (a host directory mounted while the job runs), and the databases it is given."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from gristmill.config import ConfigError, DatabaseConfig, load_config
from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.languages import Registry
from gristmill.languages.registry import REPO_ROOT
from gristmill.model import Job, Limits, Verdict

from ..conftest import sandbox_work_dir

PLUGIN = """
import contextlib, os, tempfile
from pathlib import Path
from gristmill.isolation.profile import BindMount
from gristmill.languages.plugin import ArgumentsRejected, LanguagePlugin

EVENTS = []

class Plugin(LanguagePlugin):
    names = ()

    def configure(self, databases):
        self.names = tuple(sorted(databases))

    @contextlib.asynccontextmanager
    async def attach(self, job):
        if job.env.get("WANT") == "missing":
            raise ArgumentsRejected("nothing called missing")
        with tempfile.TemporaryDirectory() as folder:
            os.chmod(folder, 0o755)
            note = Path(folder, "note")
            note.write_text(",".join(self.names))
            note.chmod(0o644)
            EVENTS.append("entered")
            yield (BindMount(folder, "/attached"),)
            EVENTS.append("exited")
"""

LIMITS = Limits(
    wall_time_ms=10_000,
    memory_bytes=256 << 20,
    cpu_time_ms=10_000,
    processes=16,
    output_bytes=1 << 20,
)


def _language(root: Path) -> tuple[Path, Path]:
    runtimes, profiles = root / "runtimes", root / "profiles"
    shutil.copytree(REPO_ROOT / "runtimes" / "bash", runtimes / "attached")
    spec = (runtimes / "attached" / "runtime.toml").read_text()
    (runtimes / "attached" / "runtime.toml").write_text(
        spec.replace('name = "bash"', 'name = "attached"')
    )
    (runtimes / "attached" / "language.py").write_text(PLUGIN)
    profiles.mkdir()
    shutil.copy(REPO_ROOT / "sandbox" / "profiles" / "base.toml", profiles)
    shutil.copy(REPO_ROOT / "sandbox" / "profiles" / "bash.toml", profiles / "attached.toml")
    return runtimes, profiles


def test_a_plugin_mounts_what_it_provides_for_the_run_only():
    with sandbox_work_dir() as work_dir:
        runtimes, profiles = _language(work_dir / "languages")
        registry = Registry(runtimes, profiles)
        databases = {"reports": DatabaseConfig(kind="sqlite", path="/nowhere")}
        backend = open_backend(None, work_dir)
        executor = Executor(compose(registry, backend, work_dir, databases=databases))
        plugin = registry.get("attached").plugin
        events = __import__(type(plugin).__module__, fromlist=["EVENTS"]).EVENTS

        async def run(env: dict[str, str]) -> object:
            job = Job("j1", "attached", "cat /attached/note\n", "main", {}, LIMITS, env=env)
            try:
                return await executor.run(job)
            finally:
                await executor.close()

        outcome = asyncio.run(run({}))
        assert outcome.verdict == Verdict.SUCCESS, outcome  # type: ignore[attr-defined]
        assert outcome.result_json == '"reports"'  # type: ignore[attr-defined]
        assert events == ["entered", "exited"]
        refused = asyncio.run(run({"WANT": "missing"}))
        assert refused.verdict == Verdict.INVALID_ARGUMENTS  # type: ignore[attr-defined]


def test_databases_are_read_by_name_from_flat_keys():
    config = load_config(
        environ={},
        overrides={
            "databases.main.dsn": "host=/run/pg dbname=app",
            "databases.main.pool_size": "2",
            "databases.local.kind": "sqlite",
            "databases.local.path": "/srv/local.sqlite",
        },
    )
    assert config.databases == {
        "main": DatabaseConfig(dsn="host=/run/pg dbname=app", pool_size=2),
        "local": DatabaseConfig(kind="sqlite", path="/srv/local.sqlite"),
    }


@pytest.mark.parametrize(
    "overrides",
    [{"databases.x.colour": "red"}, {"databases.x.kind": "oracle"}, {"databases.x.pool_size": "0"}],
)
def test_a_database_setting_that_does_not_fit_is_refused(overrides):
    with pytest.raises(ConfigError):
        load_config(environ={}, overrides=overrides)
