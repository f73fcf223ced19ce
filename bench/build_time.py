"""What a compiled language's build costs a trivial job: each sample new code, so each builds.

In one run, against one embedded server whose caches start empty:

- `first`: the first job (the language's `[build] prime` step, if it has one, then its build);
- `build`: N more jobs, each with code not built before (a comment with its number): the
  median of the outcome's build phase and of the whole Execute;
- `cached`: the last job again (its build taken from the cache).

    .venv/bin/python bench/build_time.py [--lang java] [-n 10] [--runtimes DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from bench.dependencies import embedded  # noqa: E402
from gristmill.client import Client  # noqa: E402
from gristmill.languages import Registry  # noqa: E402
from gristmill.resources import RUNTIMES_DIR  # noqa: E402
from gristmill.v1 import runtime_pb2 as pb  # noqa: E402


def _sample(client: Client, language: str, code: str) -> dict[str, float]:
    began = time.perf_counter()
    outcome = client.execute(language, code, timeout_s=600)
    elapsed_ms = (time.perf_counter() - began) * 1000
    if outcome.verdict != pb.SUCCESS:
        raise SystemExit(f"the job failed: {outcome}")
    return {"ms": elapsed_ms, "build_ms": outcome.usage.phases.build_ms}


def measure(client: Client, language: str, code: str, n: int) -> dict[str, dict[str, Any]]:
    def numbered(i: int) -> str:
        return f"{code}\n// build sample {i}\n"

    rows: dict[str, dict[str, Any]] = {"first": {**_sample(client, language, numbered(0)), "n": 1}}
    samples = [_sample(client, language, numbered(i)) for i in range(1, n + 1)]
    rows["build"] = {key: statistics.median(s[key] for s in samples) for key in ("ms", "build_ms")}
    rows["build"]["n"] = n
    rows["cached"] = {**_sample(client, language, numbered(n)), "n": 1}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lang", default="java", help="a language with a [build] table")
    parser.add_argument("-n", type=int, default=10, help="samples of a new build")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--runtimes", type=Path, help="another runtimes directory (e.g. an older copy of one)"
    )
    options = parser.parse_args()
    overrides: dict[str, Any] = {"pool.enabled": False}
    if options.runtimes:
        overrides["runtimes_dir"] = options.runtimes
    runtime = Registry(options.runtimes or RUNTIMES_DIR).get(options.lang)
    manifest = tomllib.loads((runtime.spec.folder / "runtime.toml").read_text())
    if runtime.spec.build is None or "bench" not in manifest:
        raise SystemExit(f"{options.lang} has no [build] and [bench] tables")
    # Without warm sandboxes: a job's time is then its build's and its cold start's.
    with embedded("gristmill-bench-build-", **overrides) as client:
        rows = measure(client, options.lang, manifest["bench"]["code"], options.n)
    if options.json:
        print(json.dumps(rows))
        return
    for name, row in rows.items():
        build = f"build {row['build_ms']} ms"
        print(f"{options.lang} {name:8} n={row['n']:<3} {row['ms']:8.1f} ms  {build}")


if __name__ == "__main__":
    main()
