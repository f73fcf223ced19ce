"""`gristmill config`: the settings reference is generated from gristmill/config.py (so a
new setting cannot be missing from it), the sample file is valid and changes nothing,
and the effective settings print with their secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from gristmill.config import ServerConfig, load_config
from gristmill.config_schema import leaves
from gristmill.settings_reference import MASK, reference_markdown, settings, to_toml


def _gristmill_config(*argv: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gristmill", "config", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reference_lists_every_setting_the_environment_or_a_file_can_set():
    reference = _gristmill_config("--reference")
    for key in (leaf.key for leaf in leaves(ServerConfig) if leaf.env):
        assert f"| `{key}` |" in reference, key
    assert "| `databases.<name>.dsn` |" in reference


def test_every_setting_has_a_type_and_a_meaning():
    for entry in settings():
        assert entry.kind and entry.meaning, entry.key


def test_default_limits_show_their_maximum_and_variable():
    row = next(
        line
        for line in reference_markdown(settings()).splitlines()
        if line.startswith("| `default_limits.wall_time_ms` |")
    )
    assert "`10000`" in row and "`900000`" in row
    assert "`GRISTMILL_DEFAULT_LIMITS_WALL_TIME_MS`" in row


def test_sample_file_is_valid_toml_and_changes_nothing(tmp_path: Path):
    sample = tmp_path / "gristmill.toml"
    sample.write_text(_gristmill_config("--sample"))
    tomllib.loads(sample.read_text())
    assert load_config(sample, environ={}) == ServerConfig()
    for key in (leaf.key for leaf in leaves(ServerConfig) if leaf.env):
        assert f"# {key.rsplit('.', 1)[-1]} = " in sample.read_text(), key


def test_effective_settings_come_from_file_and_environment_with_secrets_masked(tmp_path: Path):
    path = tmp_path / "gristmill.toml"
    path.write_text(
        '[databases.main]\ndsn = "postgresql://jobs:hunter2@db/jobs"\n[pool]\nidle_s = 5.0\n'
    )
    printed = json.loads(
        _gristmill_config("--json", "--config", str(path), env={"GRISTMILL_POOL_PER_LANGUAGE": "5"})
    )
    assert printed["pool.per_language"] == 5 and printed["pool.idle_s"] == 5.0
    assert printed["databases.main.dsn"] == MASK
    text = _gristmill_config("--config", str(path))
    assert "hunter2" not in text and MASK in text


def test_printed_settings_load_back_as_the_same_configuration(tmp_path: Path):
    config = load_config(
        environ={"GRISTMILL_MAX_QUEUED_JOBS": "7", "GRISTMILL_DEPS_INDEX_URL": 'https://x/"q"'}
    )
    path = tmp_path / "printed.toml"
    path.write_text(to_toml(settings(config)))
    assert load_config(path, environ={}) == config
