"""What npm dependencies cost a TypeScript job: `lodash` cold and warm, beside `bun install`.

In one run, against one embedded server whose caches start empty:

- `none`: a job without dependencies, median of N;
- `cold`: the lodash job's first run (resolve with `bun install --lockfile-only`,
  download, install into a new environment, run);
- `warm, lockfile`: the same job sent with the lockfile the cold run returned (no
  resolve, environment from the cache), median of N;
- `warm, no lockfile`: without it (resolution remembered, environment cached), median of N;
- `bun install alone`: `bun install --frozen-lockfile` of the same lockfile into a fresh
  directory from a warm download cache, outside any sandbox, median of N.

    .venv/bin/python bench/typescript_dependencies.py [-n 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from bench.dependencies import PHASES, _median, _timed, embedded  # noqa: E402
from gristmill.client import Client  # noqa: E402
from runtimes.typescript import lockfile as bunlock  # noqa: E402

BUN = "/usr/local/lib/gristmill/bun-1.4.5/bun"
NONE = "export function main() {\n  return 1;\n}\n"
LODASH = 'import _ from "lodash";\n\nexport function main() {\n  return _.VERSION;\n}\n'


def bun_install_alone(lockfile: str, n: int) -> dict[str, Any]:
    """`bun install --frozen-lockfile` of `lockfile`: once with an empty download cache,
    then N times from the warm one, each into a fresh directory."""
    files = bunlock.check(lockfile).render()
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-bun-") as scratch:
        cache = Path(scratch) / "cache"

        def once(index: int) -> float:
            target = Path(scratch) / f"p{index}"
            target.mkdir()
            for name, text in files.items():
                (target / name).write_text(text)
            argv = [BUN, "install", "--frozen-lockfile", "--ignore-scripts", "--no-progress"]
            argv += ["--backend=copyfile", "--linker=hoisted", "--use-system-ca"]
            argv += ["--cache-dir", str(cache)]
            began = time.perf_counter()
            subprocess.run(argv, cwd=target, check=True, capture_output=True)
            return (time.perf_counter() - began) * 1000

        cold = once(0)
        warm = [once(i) for i in range(1, n + 1)]
    return {"cold_ms": cold, "warm_ms": statistics.median(warm), "n": n}


def measure(client: Client, n: int) -> dict[str, dict[str, Any]]:
    def job(code: str, **fields: Any) -> Any:
        return lambda: client.execute("typescript", code, timeout_s=600, **fields)

    for _ in range(3):  # the sandbox's first starts are slower
        _timed(job(NONE))
    rows = {"none": _median(job(NONE), n)}
    cold, outcome = _timed(job(LODASH))
    rows["cold"] = {**cold, "n": 1}
    rows["warm, lockfile"] = _median(job(LODASH, lockfile=outcome.lockfile), n)
    rows["warm, no lockfile"] = _median(job(LODASH), n)
    alone = bun_install_alone(outcome.lockfile.content, n)
    rows["bun install alone, cold cache"] = {"ms": alone["cold_ms"], "n": 1}
    rows["bun install alone, warm cache"] = {"ms": alone["warm_ms"], "n": n}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="samples per warm row")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    options = parser.parse_args()
    with embedded("gristmill-bench-ts-deps-") as client:
        rows = measure(client, options.n)
    if options.json:
        print(json.dumps(rows))
        return
    for name, row in rows.items():
        phases = " ".join(f"{p}={row[p]}" for p in PHASES if p in row)
        print(f"{name:32} n={row['n']:<3} {row['ms']:8.1f} ms  {phases}")


if __name__ == "__main__":
    main()
