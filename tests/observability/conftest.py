"""Servers over the real sandbox with their telemetry on, and what they logged."""

from __future__ import annotations

import io
import logging
import shutil
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gristmill.config import TelemetryConfig
from gristmill.languages.registry import REPO_ROOT
from gristmill.observability import logs

C_RUNTIME = REPO_ROOT / "tests" / "build" / "runtimes" / "c"


def c_job() -> str:
    """A job of `c` whose code no other test compiled (so its first build is a miss)."""
    nonce = uuid.uuid4().hex
    return f'/* {nonce} */\nconst char *run(const char *a) {{ return "7"; }}\n'


@pytest.fixture
def runtimes_dir(tmp_path: Path) -> Path:
    """Bash, and the tests' tiny compiled language `c` (a build step and its cache)."""
    root = tmp_path / "runtimes"
    root.mkdir()
    shutil.copytree(REPO_ROOT / "runtimes" / "bash", root / "bash")
    shutil.copytree(C_RUNTIME, root / "c")
    return root


@pytest.fixture
def log_lines() -> Iterator[Callable[[], str]]:
    """Every record logged during the test, as the server's JSON lines."""
    stream = io.StringIO()
    handler = logs.configure(TelemetryConfig(log_format="json", log_level="INFO"), stream)
    root = logging.getLogger()
    level = root.level
    try:
        yield stream.getvalue
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    """Each sample of the endpoint's `/metrics`, by name and labels."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
