"""The telemetry settings: from a file, the environment and `gristmill serve`'s flags,
checked when read; and the server's own lines in the format asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.config import ConfigError, load_config
from tests.conftest import sandbox_work_dir


def test_settings_come_from_the_file_the_environment_and_flags(tmp_path: Path):
    config_file = tmp_path / "gristmill.toml"
    config_file.write_text(
        '[telemetry]\nlog_format = "logfmt"\nmetrics_address = "127.0.0.1:9100"\n'
    )
    config = load_config(
        config_file,
        environ={"GRISTMILL_TELEMETRY_LOG_LEVEL": "WARNING"},
        overrides={"telemetry.otlp_endpoint": "http://127.0.0.1:4317"},
    )
    telemetry = config.telemetry
    assert (telemetry.log_format, telemetry.log_level) == ("logfmt", "WARNING")
    assert telemetry.metrics_address == "127.0.0.1:9100"
    assert telemetry.otlp_endpoint == "http://127.0.0.1:4317"


@pytest.mark.parametrize(
    ("key", "value"), [("telemetry.log_level", "LOUD"), ("telemetry.log_format", "xml")]
)
def test_an_unknown_level_or_format_is_refused_when_read(key: str, value: str):
    with pytest.raises(ConfigError, match=key):
        load_config(environ={}, overrides={key: value})


def test_serve_logs_its_start_and_stop_in_the_format_asked(tmp_path: Path):
    sock = tmp_path / "serve.sock"
    argv = [sys.executable, "-m", "gristmill.cli", "serve", "--address", f"unix:{sock}"]
    argv += ["--idle-exit-s", "1", "--log-format", "logfmt"]
    with sandbox_work_dir() as work_dir:
        argv += ["--work-dir", str(work_dir)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    started = [line for line in lines if 'msg="server started"' in line]
    assert len(started) == 1 and f"address=unix:{sock}" in started[0]
    assert started[0].startswith("ts=") and "level=info" in started[0]
    assert any('msg="server stopped"' in line for line in lines)
