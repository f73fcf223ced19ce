"""`runtime.toml`'s `[build]` table: read with its defaults, refused when malformed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill.languages.spec import DEFAULT_BUILD_LIMITS, SpecError, load_spec

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
