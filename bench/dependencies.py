"""What dependencies cost: the `requests` job cold and warm, beside a job with none.

In one run, against one embedded server whose caches start empty (its environment
cache and uv's download cache):

- `none`: `def main(): return 1`, median of N sequential Execute calls;
- `cold`: the PEP 723 `requests` job's first run: resolve, download, install, run;
- `warm, lockfile`: the same job sent with the lockfile the cold run returned (the
  worker's replay path: no resolve, environment from the cache), median of N;
- `warm, no lockfile`: the same job without a lockfile (its resolution remembered
  within `deps.resolution_ttl_s`, environment from the cache), median of N;

each with the Outcome's phase timings. Numbers depend on the machine and on how far
the registry is: they belong here, never in a pass/fail test.

    .venv/bin/python bench/dependencies.py          # a table
    .venv/bin/python bench/dependencies.py --json   # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from gristmill.client import Client  # noqa: E402
from gristmill.config import load_config  # noqa: E402
from gristmill.server import BackgroundServer  # noqa: E402
from gristmill.v1 import runtime_pb2 as pb  # noqa: E402

NO_DEPENDENCIES = "def main():\n    return 1\n"
REQUESTS = """\
# /// script
# dependencies = ["requests"]
# ///
import requests

def main():
    return requests.__version__
"""
PHASES = ("resolve_ms", "install_ms", "sandbox_setup_ms", "run_ms")


@contextmanager
def embedded(prefix: str, **overrides: Any) -> Iterator[Client]:
    """A client of one embedded server (settings `overrides`) whose caches start empty,
    in a work directory of its own, removed afterwards."""
    work_dir = Path(tempfile.mkdtemp(prefix=prefix))
    work_dir.chmod(0o711)  # the sandbox's user must reach its job directories
    try:
        overrides = {"address": "127.0.0.1:0", "work_dir": work_dir, **overrides}
        config = load_config(overrides=overrides)
        with BackgroundServer(config) as address, Client(address) as client:
            yield client
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _timed(call: Callable[[], pb.Outcome]) -> tuple[dict[str, Any], pb.Outcome]:
    began = time.perf_counter()
    outcome = call()
    elapsed_ms = (time.perf_counter() - began) * 1000
    if outcome.verdict != pb.SUCCESS:
        raise SystemExit(f"the job failed: {outcome}")
    phases = {name: getattr(outcome.usage.phases, name) for name in PHASES}
    cached = outcome.environment.cached if outcome.HasField("environment") else None
    return {"ms": elapsed_ms, "cached": cached, **phases}, outcome


def _median(call: Callable[[], pb.Outcome], n: int) -> dict[str, Any]:
    samples = [_timed(call)[0] for _ in range(n)]
    row = {key: statistics.median(s[key] for s in samples) for key in ("ms", *PHASES)}
    return {**row, "cached": samples[-1]["cached"], "n": n}


def measure(client: Client, n: int) -> dict[str, dict[str, Any]]:
    def job(code: str, **fields: Any) -> Callable[[], pb.Outcome]:
        return lambda: client.execute("python", code, timeout_s=600, **fields)

    for _ in range(3):  # the sandbox's first starts are slower
        _timed(job(NO_DEPENDENCIES))
    rows = {"none (before)": _median(job(NO_DEPENDENCIES), n)}
    cold, outcome = _timed(job(REQUESTS))
    rows["cold"] = {**cold, "n": 1}
    rows["warm, lockfile"] = _median(job(REQUESTS, lockfile=outcome.lockfile), n)
    rows["warm, no lockfile"] = _median(job(REQUESTS), n)
    rows["none (after)"] = _median(job(NO_DEPENDENCIES), n)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="samples per warm row")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    options = parser.parse_args()
    with embedded("gristmill-bench-deps-") as client:
        rows = measure(client, options.n)
    if options.json:
        print(json.dumps(rows))
        return
    table = Table(
        "python job", "n", "Execute ms", *PHASES, "env cached", title=__doc__.split("\n")[0]
    )
    for name, row in rows.items():
        phases = [str(row[p]) for p in PHASES]
        table.add_row(name, str(row["n"]), f"{row['ms']:.1f}", *phases, str(row["cached"]))
    Console().print(table)


if __name__ == "__main__":
    main()
