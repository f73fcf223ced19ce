"""`runtime.toml`'s `[build]` table: read with its defaults, refused when malformed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill.isolation.layout import MEMORY_VARIABLE
from gristmill.isolation.profile import load_profile
from gristmill.jobs.mounts import job_plan
from gristmill.jobs.workspace import Workspace
from gristmill.languages.plugin import LanguagePlugin
from gristmill.languages.registry import REPO_ROOT, Runtime
from gristmill.languages.spec import DEFAULT_BUILD_LIMITS, SpecError, load_spec
from gristmill.model import Limits

HEAD = """\
name = "c"
extensions = [".c"]
source_file = "main.c"
run = ["/gristmill/build/main"]
version_command = ["/usr/bin/gcc", "--version"]
"""


def spec_of(tmp_path: Path, text: str):
    (tmp_path / "runtime.toml").write_text(HEAD + text)
    return load_spec(tmp_path)


def test_a_language_without_a_build_table_has_no_build_step(tmp_path):
    assert spec_of(tmp_path, "").build is None


def test_build_table_is_read_with_its_own_limits_and_never_the_network(tmp_path):
    build = spec_of(
        tmp_path,
        '[build]\nrun = ["/usr/bin/gcc", "main.c"]\noutputs = ["main"]\n'
        'env = { GOCACHE = "/tmp/go" }\nmemory_bytes = 1048576\n',
    ).build
    assert build is not None
    assert (build.run, build.outputs, dict(build.env)) == (
        ("/usr/bin/gcc", "main.c"),
        ("main",),
        {"GOCACHE": "/tmp/go"},
    )
    assert build.limits.memory_bytes == 1048576
    assert build.limits.wall_time_ms == DEFAULT_BUILD_LIMITS.wall_time_ms
    assert build.limits.network is False


@pytest.mark.parametrize(
    "table",
    [
        'run = ["/usr/bin/gcc"]\n',
        'run = []\noutputs = ["main"]\n',
        'run = ["/usr/bin/gcc"]\noutputs = ["/etc/passwd"]\n',
        'run = ["/usr/bin/gcc"]\noutputs = ["../main"]\n',
        'run = ["/usr/bin/gcc"]\noutputs = ["main"]\nnetwork = true\n',
    ],
    ids=["no outputs", "empty run", "absolute output", "output outside", "network asked"],
)
def test_malformed_build_table_is_refused(tmp_path, table):
    with pytest.raises(SpecError):
        spec_of(tmp_path, "[build]\n" + table)


def test_the_memory_variable_is_set_only_for_a_language_that_asks(tmp_path):
    limits = Limits(wall_time_ms=1, memory_bytes=123 << 20, cpu_time_ms=1, processes=1,
                    output_bytes=1)  # fmt: skip
    profile = load_profile(REPO_ROOT / "sandbox" / "profiles", "no-such-language")
    workspace = Workspace(tmp_path, tmp_path / "job", tmp_path / "root")
    for asks, expected in ((False, None), (True, str(123 << 20))):
        spec = spec_of(tmp_path, f"memory_variable = {str(asks).lower()}\n")
        runtime = Runtime(spec=spec, plugin=LanguagePlugin(), profile=profile)
        plan = job_plan(runtime, tmp_path, workspace, ("x",), {}, limits, None, None)
        assert plan.env.get(MEMORY_VARIABLE) == expected
