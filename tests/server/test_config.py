"""Configuration precedence (defaults < TOML < environment < flags) and checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill.config import DEFAULT_LIMITS, ConfigError, ServerConfig, load_config


def test_defaults_derive_the_queue_from_the_concurrency():
    config = ServerConfig(max_concurrent_jobs=3)
    assert config.queue_capacity == 12
    assert config.default_limits == DEFAULT_LIMITS
    assert not config.allow_network


def test_later_sources_win(tmp_path):
    toml = tmp_path / "gristmill.toml"
    toml.write_text(
        'address = "0.0.0.0:1"\nmax_concurrent_jobs = 2\nmax_queued_jobs = 3\n'
        "[default_limits]\nwall_time_ms = 2000\n[max_limits]\nnetwork = true\n"
    )
    environ = {"GRISTMILL_MAX_QUEUED_JOBS": "5", "GRISTMILL_ADDRESS": "0.0.0.0:2"}
    config = load_config(toml, environ, {"address": "0.0.0.0:3", "work_dir": None})
    assert config.address == "0.0.0.0:3"
    assert config.max_queued_jobs == 5
    assert config.max_concurrent_jobs == 2
    assert config.default_limits.wall_time_ms == 2000
    assert config.allow_network


def test_config_file_may_come_from_the_environment(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('sandbox_backend = "process"\nwork_dir = "/srv/g"\n')
    config = load_config(environ={"GRISTMILL_CONFIG": str(toml)})
    assert config.sandbox_backend == "process"
    assert config.work_dir == Path("/srv/g")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GRISTMILL_MAX_CONCURRENT_JOBS": "many"}, "max_concurrent_jobs"),
        ({"GRISTMILL_MAX_CONCURRENT_JOBS": "0"}, "at least 1"),
        ({"GRISTMILL_DEFAULT_LIMITS_MEMORY_BYTES": str(1 << 60)}, "default_limits.memory_bytes"),
        ({"GRISTMILL_MAX_LIMITS_NETWORK": "perhaps"}, "not a boolean"),
    ],
)
def test_malformed_settings_are_refused_with_their_name(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ=environ)


def test_unknown_or_mistyped_toml_settings_are_refused(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("max_concurent_jobs = 2\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(toml, environ={})
    toml.write_text("max_concurrent_jobs = true\n")
    with pytest.raises(ConfigError, match="expected int"):
        load_config(toml, environ={})
