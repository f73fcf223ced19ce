"""Generates the blocking client from the asyncio one (httpcore's way, with `unasync`).

Run it after editing `gristmill/client/_async/client.py`; `tests/test_client.py` fails
while `gristmill/client/_sync/client.py` is not what this makes.

    .venv/bin/python scripts/unasync_client.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "gristmill/client/_async/client.py"
TARGET = ROOT / "gristmill/client/_sync/client.py"
HEADER = "# Generated from _async/client.py by scripts/unasync_client.py: edit that file.\n"
REPLACEMENTS = {"AsyncClient": "Client", "aio_channel": "channel", "asyncio": "time"}
"""Beyond unasync's own (`__aenter__`, `AsyncIterator`, `AsyncX` -> `SyncX`, ...)."""


def generated() -> str:
    """The blocking client's source, as this script writes it."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "_async" / "client.py"
        source.parent.mkdir()
        shutil.copyfile(SOURCE, source)
        unasync.unasync_files([str(source)], [unasync.Rule("/_async/", "/_sync/", REPLACEMENTS)])
        target = Path(scratch) / "_sync" / "client.py"
        target.write_text(HEADER + target.read_text())
        ruff = [sys.executable, "-m", "ruff"]
        subprocess.run([*ruff, "check", "--fix", "-q", "--select", "I", target], check=True)
        subprocess.run([*ruff, "format", "-q", target], check=True)
        return target.read_text()


if __name__ == "__main__":
    TARGET.write_text(generated())
