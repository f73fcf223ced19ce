"""The compiled supervisor's harness (`supervisor_harness.c`), built once per test run
with AddressSanitizer and UndefinedBehaviorSanitizer."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("supervisor_harness.c")
FLAGS = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")


@cache
def harness() -> str:
    """The harness's path, compiled now (skips the test where no gcc is)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc here (make install puts it)")
    folder = tempfile.mkdtemp(prefix="gristmill-harness-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    binary = str(Path(folder) / "supervisor_harness")
    subprocess.run(
        [gcc, *FLAGS, "-Wall", "-Wextra", "-Werror", "-o", binary, str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return binary
