"""`runtimes/_template/`, a new language's minimum: never served, but loaded and run here as
a language of its own, so that what a newcomer copies keeps working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gristmill.client import Client
from gristmill.config import ServerConfig
from gristmill.languages import ArgumentsRejected, Job, LanguagePlugin, Registry
from gristmill.languages.registry import REPO_ROOT
from gristmill.model import Limits
from gristmill.resources import PROFILES_DIR
from gristmill.server import BackgroundServer
from gristmill.v1 import runtime_pb2 as pb
from tests.conftest import ConfigFactory

TEMPLATE = REPO_ROOT / "runtimes" / "_template"
LIMITS = Limits(wall_time_ms=1000, memory_bytes=1 << 26, cpu_time_ms=1000, processes=8,
                output_bytes=1 << 20)  # fmt: skip


def job(code: str, args: dict[str, object], entry_point: str = "main") -> Job:
    return Job("j", "template", code, entry_point, args, LIMITS)


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    """A runtimes directory holding the template copied as a newcomer would, as `template`."""
    shutil.copytree(TEMPLATE, tmp_path / "runtimes" / "template")
    return tmp_path / "runtimes"


def test_the_template_is_never_served() -> None:
    registry = Registry()
    assert "template" not in registry.names()
    assert all(not r.spec.folder.name.startswith("_") for r in registry)


def test_the_template_copied_is_a_language_with_its_own_plugin(copied: Path) -> None:
    runtime = Registry(copied, PROFILES_DIR).get("template")
    assert runtime.available
    assert type(runtime.plugin) is not LanguagePlugin
    example = job(
        (TEMPLATE / "example.template").read_text(),
        json.loads((TEMPLATE / "example.args.json").read_text()),
    )
    message = runtime.plugin.job_message(example, "/job/main.sh")
    assert message == b"/job/main.sh\nmain\nname=gristmill\n"


@pytest.mark.parametrize(
    "args, entry_point",
    [({"a b": 1}, "main"), ({"name": "two\nlines"}, "main"), ({}, "rm -rf")],
    ids=["bad name", "two lines", "bad entry point"],
)
def test_the_template_refuses_what_its_wrapper_cannot_read(
    copied: Path, args: dict[str, object], entry_point: str
) -> None:
    plugin = Registry(copied, PROFILES_DIR).get("template").plugin
    with pytest.raises(ArgumentsRejected):
        plugin.job_message(job("", args, entry_point), "/job/x")


def test_the_templates_example_runs_in_the_real_sandbox(
    copied: Path, real_config: ConfigFactory
) -> None:
    config: ServerConfig = real_config(runtimes_dir=copied, max_concurrent_jobs=1)
    code = (TEMPLATE / "example.template").read_text()
    with BackgroundServer(config) as address, Client(address) as client:
        outcome = client.execute("template", code, {"name": "gristmill", "n": 2})
        missing = client.execute("template", code, entry_point="absent")
    assert (outcome.verdict, outcome.result_json) == (pb.SUCCESS, '"hello, gristmill"'), outcome
    assert missing.verdict == pb.ERROR
