"""What warm sandboxes hold while they wait: per language, and for a whole pool.

For each language whose jobs can start warm, its trivial job (its `[bench]` code) is run
twice through an executor with the pool on, under a default server's limits, so that its
kind is in demand (a kind with a build is from its second job); once a sandbox of that
kind waits, its memory is read from its cgroup (what the pool's `max_memory_bytes`
budget counts: the interpreter, its tmpfs pages, the jail's processes). The last row is
the pool a quiet server keeps with every language in demand: one sandbox of each.

    .venv/bin/python bench/pool_memory.py [--backend nsjail|process]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gristmill.config import PoolConfig, ServerConfig
from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.jobs.workspace import unmount_jobs_dir
from gristmill.languages import Registry
from gristmill.model import Job

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import WORKLOADS  # type: ignore[import-not-found]

MiB = 1024 * 1024


async def _ready(executor: Executor, language: str, count: int, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while executor.pool.ready(language) < count:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # let the interpreter settle before its memory is read
    return True


async def measure(backend_name: str) -> list[tuple[str, float]]:
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-pool-memory-", dir="/var/tmp"))
    work_dir.chmod(0o755)  # noqa: ASYNC240 (before anything runs)
    backend = open_backend(backend_name, work_dir)
    config = PoolConfig(enabled=True, max_sandboxes=64, max_memory_bytes=1 << 40, idle_s=3600)
    registry = Registry()
    server = ServerConfig()
    executor = Executor(
        compose(registry, backend, work_dir, pool=config, pool_limits=server.pool_limits)
    )
    rows: list[tuple[str, float]] = []
    try:
        languages = [
            w for w in WORKLOADS if w.language in {r.name for r in registry if r.available}
        ]
        for workload in languages:
            runtime = registry.get(workload.language)
            if not runtime.spec.message_context:
                continue
            job = Job(
                f"pool-memory-{workload.language}",
                workload.language,
                workload.code,
                runtime.spec.default_entry_point,
                {},
                server.default_limits,
            )
            for _ in range(2):
                await executor.run(job)
            if await _ready(executor, workload.language, 1):
                held = executor.pool.memory_bytes(workload.language)
                rows.append((workload.language, held / MiB))
        total = executor.pool.memory_bytes()
        rows.append(("pool: one of each", total / MiB))
    finally:
        await executor.close()
        unmount_jobs_dir(work_dir / "jobs", force=True)
        shutil.rmtree(work_dir, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="nsjail", choices=["nsjail", "process"])
    args = parser.parse_args()
    rows = asyncio.run(measure(args.backend))
    table = Table(title=f"Idle warm sandboxes ({args.backend}): memory held, from their cgroups")
    table.add_column("language")
    table.add_column("MiB", justify="right")
    for name, mib in rows:
        table.add_row(name, f"{mib:.1f}")
    Console(width=100).print(table)


if __name__ == "__main__":
    main()
