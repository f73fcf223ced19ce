"""Tries to reach what /job/main.probe names ("host:port", or a port on 127.0.0.1), in
the build step and in the run.

`build` writes what it found into the build output, and the names of the variables it
had; `run` answers, per runtimes/PROTOCOL.md, what the build found and had, what the
run finds and its POISON variable, and whether the run could write into the build output.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

BUILD_DIR = Path(os.environ["GRISTMILL_BUILD"])


def reach() -> str:
    host, _, port = Path("/job/main.probe").read_text().strip().rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=2).close()
    except OSError as error:
        return f"unreachable: {error}"
    return "connected"


def build_dir_writable() -> bool:
    try:
        (BUILD_DIR / "scribble").write_text("")
    except OSError:
        return False
    return True


def main(step: str) -> None:
    if step == "build":
        (BUILD_DIR / "answer").write_text(reach())
        (BUILD_DIR / "variables").write_text(json.dumps(sorted(os.environ)))
        return
    found = {
        "build": (BUILD_DIR / "answer").read_text(),
        "build_variables": json.loads((BUILD_DIR / "variables").read_text()),
        "run_poison": os.environ.get("POISON"),
        "run": reach(),
        "build_dir_writable": build_dir_writable(),
    }
    with os.fdopen(3, "w") as channel:
        json.dump({"result": found}, channel)


if __name__ == "__main__":
    main(sys.argv[1])
