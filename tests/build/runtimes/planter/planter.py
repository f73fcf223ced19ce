"""Plants special files in the build output (`build`), then reports their modes (`run`).

The job's code (/job/main.planter) is a nonce, and "fifo" on its first line adds a
named pipe. The run answers, per runtimes/PROTOCOL.md, `{path: octal mode}` of what
the build left.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BUILD_DIR = Path(os.environ["GRISTMILL_BUILD"])
PLANTED = {"program": 0o6755, "shared": 0o2755, "sticky": 0o1644}


def build() -> None:
    (BUILD_DIR / "program").write_text("#!/bin/sh\nid -u\n")
    (BUILD_DIR / "shared").mkdir()
    (BUILD_DIR / "sticky").write_text("")
    for name, mode in PLANTED.items():
        (BUILD_DIR / name).chmod(mode)
    if Path("/job/main.planter").read_text().startswith("fifo"):
        os.mkfifo(BUILD_DIR / "pipe")


def run() -> None:
    modes = {name: oct((BUILD_DIR / name).stat().st_mode & 0o7777) for name in PLANTED}
    with os.fdopen(3, "w") as channel:
        json.dump({"result": modes}, channel)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build()
    else:
        run()
