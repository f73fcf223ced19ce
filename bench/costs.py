"""Where a trivial job's time and CPU go, per backend, language and pool mode (`make profile`).

For each combination it runs N trivial jobs one after another through an embedded
server (in a process of its own) and reports, as medians per job:

- the wall time as the client sees it, split into the server's own phases (prepare:
  the workspace; sandbox set-up: the jail's construction, or a warm sandbox's
  hand-over; run: from the program's start, or the hand-over, to its end) and the
  rest (gRPC both ways, admission, the outcome's path);
- the CPU the service spends (server process, fork server, offload workers), from
  their CPU counters before and after, divided by N, and where in the server it goes:
  gRPC's own threads (its C core: event engine, timers), the busiest Python thread (the
  event loop, where the job's path runs), the server's other threads (`to_thread`
  work, the main thread) and its child processes (the fork server, offload workers);
- the CPU of the sandbox itself (supervisor, init, the program), from the job's own
  cgroup accounting in the outcome, beside the bare program's CPU (measured in the
  same run with the same N).

    .venv/bin/python bench/costs.py                     # both backends, both pool modes
    .venv/bin/python bench/costs.py -n 50 --backends nsjail --languages bash
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import (  # type: ignore[import-not-found]
    WORKLOADS,
    ServiceClient,
    Workload,
    bare_call,
    bare_directory,
    embedded_server,
    make_job,
    outcome_problem,
)


@dataclass(frozen=True)
class Cost:
    backend: str
    language: str
    pool: str
    n: int
    client_ms: float
    prepare_ms: float
    setup_ms: float
    run_ms: float
    rest_ms: float
    service_cpu_ms: float
    # service_cpu_ms split: SERVICE_PARTS -> ms per job.
    service_parts_ms: dict[str, float]
    sandbox_cpu_ms: float
    bare_cpu_ms: float
    warm_share: float


SERVICE_PARTS = ("gRPC", "loop", "threads", "children")
"""Where the service's CPU goes (see the module's docstring)."""
_GRPC_THREADS = ("grpc_", "event_engine", "lifeguard", "default-executo", "resolver-execut")
"""The name prefixes of the threads gRPC's C core starts."""


def _service_cpu_s(server_pid: int) -> dict[str, float]:
    """CPU used so far by the server process and its children (fork server, workers):
    "total" (the server's own), "children", and each of the server's threads by id."""
    server = psutil.Process(server_pid)
    times = server.cpu_times()
    used = {"total": times.user + times.system, "children": 0.0}
    for child in server.children(recursive=False):
        with contextlib.suppress(psutil.NoSuchProcess):
            # The fork server and offload workers; not a sandbox's supervisor (its group's).
            if child.name().startswith("python"):
                child_times = child.cpu_times()
                used["children"] += child_times.user + child_times.system
    for thread in server.threads():
        used[str(thread.id)] = thread.user_time + thread.system_time
    return used


def _service_parts(
    server_pid: int, before: dict[str, float], after: dict[str, float]
) -> dict[str, float]:
    """The CPU between two `_service_cpu_s` readings, in seconds, by SERVICE_PARTS: the
    threads gRPC names, the busiest other thread (the event loop), the rest of the
    server's own (other threads, also those gone since), and its child processes."""
    grpc_s, python = 0.0, []
    for tid in after.keys() - {"total", "children"}:
        try:
            name = Path(f"/proc/{server_pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            name = ""
        delta = after[tid] - before.get(tid, 0.0)
        if name.startswith(_GRPC_THREADS):
            grpc_s += delta
        else:
            python.append(delta)
    loop_s = max(python, default=0.0)
    own_s = after["total"] - before["total"]
    return {
        "gRPC": grpc_s,
        "loop": loop_s,
        "threads": max(own_s - grpc_s - loop_s, 0.0),
        "children": after["children"] - before["children"],
    }


def _server_pid(address: str) -> int:
    port = int(address.rpartition(":")[2])
    for connection in psutil.net_connections("tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == "LISTEN":
            return int(connection.pid or 0)
    raise RuntimeError(f"no process listens on {address}")


def _bare_cpu_ms(workload: Workload, n: int) -> float:
    with bare_directory(workload) as directory:
        call = bare_call(workload.bare_argv, directory)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(n):
            call()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used * 1000 / n


def measure(address: str, workload: Workload, n: int, backend: str, pool: str) -> Cost:
    client = ServiceClient(address, 120)
    try:
        for _ in range(5):
            client.execute(make_job(workload, "warm-up"))
        pid = _server_pid(address)
        cpu_before = _service_cpu_s(pid)
        walls, outcomes = [], []
        for _ in range(n):
            started = time.perf_counter()
            outcome = client.execute(make_job(workload, "cost"))
            walls.append((time.perf_counter() - started) * 1000)
            if problem := outcome_problem(outcome):
                raise RuntimeError(f"{workload.language}: {problem}")
            outcomes.append(outcome)
        parts = _service_parts(pid, cpu_before, _service_cpu_s(pid))
        service_parts_ms = {part: parts[part] * 1000 / n for part in SERVICE_PARTS}
    finally:
        client.close()

    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    phases = [o.usage.phases for o in outcomes]
    prepare = median([p.prepare_ms for p in phases])
    setup = median([p.sandbox_setup_ms for p in phases])
    run = median([p.run_ms for p in phases])
    client_ms = median(walls)
    return Cost(
        backend=backend,
        language=workload.language,
        pool=pool,
        n=n,
        client_ms=client_ms,
        prepare_ms=prepare,
        setup_ms=setup,
        run_ms=run,
        rest_ms=client_ms - prepare - setup - run,
        service_cpu_ms=sum(service_parts_ms.values()),
        service_parts_ms=service_parts_ms,
        sandbox_cpu_ms=median([o.usage.user_cpu_ms + o.usage.system_cpu_ms for o in outcomes]),
        bare_cpu_ms=_bare_cpu_ms(workload, n),
        warm_share=sum(o.warm_sandbox for o in outcomes) / n,
    )


def print_costs(console: Console, costs: Sequence[Cost]) -> None:
    table = Table(
        title="One trivial job: where the time goes (ms, medians)",
        caption="rest = client wall - prepare - set-up - run: gRPC, admission, the outcome's "
        "path; service CPU = server + fork server per job; sandbox CPU = supervisor, "
        "init and program (the job's cgroup)",
    )
    columns = (
        "backend",
        "language",
        "pool",
        "warm",
        "client",
        "prepare",
        "set-up",
        "run",
        "rest",
        "service CPU",
        "sandbox CPU",
        "bare CPU",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for c in costs:
        table.add_row(
            c.backend,
            c.language,
            c.pool,
            f"{c.warm_share:.0%}",
            *(
                f"{v:.1f}"
                for v in (
                    c.client_ms,
                    c.prepare_ms,
                    c.setup_ms,
                    c.run_ms,
                    c.rest_ms,
                    c.service_cpu_ms,
                    c.sandbox_cpu_ms,
                    c.bare_cpu_ms,
                )
            ),
        )
    console.print(table)
    parts = Table(
        title="Service CPU per job, by where it runs (ms)",
        caption="gRPC = its C core's threads; loop = the busiest Python thread (the event "
        "loop); threads = the server's others (to_thread work); children = fork server and "
        "offload workers",
    )
    for column in ("backend", "language", "pool", *SERVICE_PARTS, "all"):
        parts.add_column(
            column, justify="left" if column in ("backend", "language", "pool") else "right"
        )
    for c in costs:
        values = [c.service_parts_ms[part] for part in SERVICE_PARTS]
        parts.add_row(
            c.backend, c.language, c.pool, *(f"{v:.2f}" for v in values), f"{c.service_cpu_ms:.2f}"
        )
    console.print(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="jobs per row (100)")
    parser.add_argument("--backends", default="process,nsjail")
    parser.add_argument("--pools", default="warm,cold")
    parser.add_argument("--languages", default=",".join(w.language for w in WORKLOADS))
    args = parser.parse_args(argv)
    wanted = set(args.languages.split(","))
    workloads = [w for w in WORKLOADS if w.language in wanted]
    console = Console()
    console.width = max(console.width, 140)
    costs = []
    for backend in args.backends.split(","):
        for pool in args.pools.split(","):
            console.log(f"{backend}, pool {pool}")
            with embedded_server(backend, pool == "warm") as address:
                costs += [measure(address, w, args.n, backend, pool) for w in workloads]
    print_costs(console, costs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
