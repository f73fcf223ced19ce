"""What logs, metrics and traces cost per job: the same trivial jobs through servers that
differ only in their telemetry, side by side in one run (`make bench`).

Modes, each an embedded server of its own (in a child process, as in latency.py):

- off: log level WARNING (no line per job), no metrics endpoint, no tracing;
- logs: a JSON line per job, written to a file;
- metrics: the Prometheus endpoint on, so every job is counted (scraped at the end);
- traces: spans per call, job and phase, exported by OTLP/gRPC in batches to a
  collector stub in this process (which counts what it receives);
- all: the three together.

Every server runs at once and the jobs go to them in turn (job i to each server, in an
order that rotates), so that a machine whose load drifts weighs on every mode alike.
For each mode and language: the client's p50 and p95 over N jobs after a warm-up, and
the service's CPU per job (the server process and its children, from their CPU
counters), beside the `off` row. Then, in this process and free of the sandbox's noise,
what the job table's watch itself costs per job in each mode (its phase events and its
end: log line, metrics, spans; the best of five repeats). Numbers depend on the machine
and its load: they belong here, never in a pass/fail test.

    .venv/bin/python bench/telemetry.py                 # bash and python, n=150
    .venv/bin/python bench/telemetry.py -n 50 --languages bash --json
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import psutil
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from costs import _server_pid, _service_cpu_s  # type: ignore[import-not-found]
from latency import (  # type: ignore[import-not-found]
    WORKLOADS,
    ServiceClient,
    Workload,
    embedded_server,
    make_job,
    outcome_problem,
    percentile,
)

INFO = {"log_level": "INFO", "log_format": "json"}
QUIET = {"log_level": "WARNING", "log_format": "json"}
METRICS = {"metrics_address": "127.0.0.1:0"}
TRACES = {"otlp_endpoint": "collector"}  # replaced by the mode's own collector's address
MODES = {
    "off": QUIET,
    "logs": INFO,
    "metrics": {**QUIET, **METRICS},
    "traces": {**QUIET, **TRACES},
    "all": {**INFO, **METRICS, **TRACES},
}
SPANS_PER_JOB = 6
"""The call's, the job's, and queue, prepare, sandbox_setup and run."""


class Collector(otlp_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that only counts the spans it is sent."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        count = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        with self._lock:
            self.spans += count
        return otlp.ExportTraceServiceResponse()


@contextlib.contextmanager
def collector_at() -> Iterator[tuple[Collector, str]]:
    """A collector listening on a free loopback port, and its address."""
    collector = Collector()
    receiver = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    otlp_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        yield collector, f"127.0.0.1:{port}"
    finally:
        receiver.stop(grace=None)


@dataclass
class Server:
    """One mode's server, its client and collector."""

    mode: str
    address: str
    client: ServiceClient
    collector: Collector | None
    pid: int = 0
    walls_ms: list[float] = field(default_factory=list)


@dataclass
class Row:
    mode: str
    language: str
    n: int
    p50_ms: float
    p95_ms: float
    service_cpu_ms: float
    spans_per_job: float = math.nan
    counted: bool | None = None


def _counted(server: Server, language: str, n: int) -> bool:
    """Whether the server's metrics endpoint (its other listening port) counts at least
    `n` jobs of `language`."""
    grpc_port = int(server.address.rpartition(":")[2])
    ports = [
        c.laddr.port
        for c in psutil.Process(server.pid).net_connections("tcp")
        if c.status == "LISTEN" and c.laddr and c.laddr.port != grpc_port
    ]
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for line in text.splitlines():
            if line.startswith("gristmill_jobs_total{") and f'language="{language}"' in line:
                return float(line.rsplit(" ", 1)[1]) >= n
    return False


def _run_job(server: Server, workload: Workload, record: bool) -> None:
    started = time.perf_counter()
    outcome = server.client.execute(make_job(workload, server.mode))
    if record:
        server.walls_ms.append((time.perf_counter() - started) * 1000)
    if problem := outcome_problem(outcome, workload.result_json):
        raise SystemExit(f"{server.mode} {workload.language}: {problem}")


def measure(servers: Sequence[Server], workload: Workload, args: argparse.Namespace) -> list[Row]:
    """N jobs of `workload` on every server, in turn, after a warm-up on each."""
    spans_before = {s.mode: s.collector.spans for s in servers if s.collector}
    for server in servers:
        server.walls_ms = []
        for _ in range(args.warmup):
            _run_job(server, workload, record=False)
    cpu_before = {s.mode: _service_cpu_s(s.pid) for s in servers}
    for i in range(args.n):
        for k in range(len(servers)):
            _run_job(servers[(i + k) % len(servers)], workload, record=True)
    cpu_ms = {s.mode: (_service_cpu_s(s.pid) - cpu_before[s.mode]) * 1000 / args.n for s in servers}
    rows = []
    jobs = args.warmup + args.n
    for server in servers:
        walls = sorted(server.walls_ms)
        row = Row(
            server.mode,
            workload.language,
            args.n,
            percentile(walls, 50),
            percentile(walls, 95),
            cpu_ms[server.mode],
        )
        if server.collector is not None:
            # The batch processor exports every 5 s: wait for these jobs' spans.
            collector, before = server.collector, spans_before[server.mode]
            deadline = time.monotonic() + 15
            while collector.spans - before < SPANS_PER_JOB * jobs and time.monotonic() < deadline:
                time.sleep(0.2)
            row.spans_per_job = (collector.spans - before) / jobs
        if "metrics_address" in MODES[server.mode]:
            row.counted = _counted(server, workload.language, args.n)
        rows.append(row)
    return rows


def watch_cost_us(settings: dict[str, str], n: int, repeats: int = 5) -> float:
    """Microseconds per job of the job table's watch in this process (the best of
    `repeats`): made at submission, told of the queue's end and four events, then of
    the outcome."""
    from gristmill.config import DEFAULT_LIMITS, TelemetryConfig
    from gristmill.model import Job, Outcome, PhaseEvent, Phases, StartedEvent, Usage, Verdict
    from gristmill.observability import Telemetry, logs

    config = TelemetryConfig(**settings)
    root = logging.getLogger()
    job = Job("bench-watch", "bash", "true", "main", {}, DEFAULT_LIMITS)
    phases = Phases(queued_ms=1, prepare_ms=1, sandbox_setup_ms=2, run_ms=9)
    outcome = Outcome(job.id, Verdict.SUCCESS, usage=Usage(phases=phases), sandbox="nsjail")
    events = (
        PhaseEvent("prepare"),
        PhaseEvent("sandbox_setup"),
        StartedEvent(1),
        PhaseEvent("run"),
    )
    loop = asyncio.new_event_loop()
    done: asyncio.Future[Outcome] = loop.create_future()
    done.set_result(outcome)
    best = math.inf
    with tempfile.TemporaryFile("w+") as log_file:
        handler = logs.configure(config, log_file)
        telemetry = Telemetry(config)
        try:
            for _ in range(repeats):
                started = time.perf_counter()
                for _ in range(n):
                    watch = telemetry.watch(job)
                    watch.admitted()
                    for event in events:
                        watch.event(event)
                    watch.ended(done)  # type: ignore[arg-type]
                best = min(best, time.perf_counter() - started)
        finally:
            telemetry.close()
            root.removeHandler(handler)
            loop.close()
    return best * 1e6 / n


def print_rows(console: Console, rows: Sequence[Row]) -> None:
    table = Table(
        title="Telemetry: cost per trivial job (ms), each mode its own server, jobs in turn",
        caption="Δ = this mode minus `off` in the same run; service CPU = server process and "
        "its children (fork server, workers) per job",
    )
    columns = ("mode", "language", "p50", "Δ p50", "p95", "service CPU", "Δ CPU", "spans/job")
    for column in (*columns, "counted"):
        table.add_column(column, justify="left" if column in ("mode", "language") else "right")
    off = {r.language: r for r in rows if r.mode == "off"}
    for r in rows:
        base = off.get(r.language)
        delta = base is not None and r is not base
        table.add_row(
            r.mode,
            r.language,
            f"{r.p50_ms:.1f}",
            f"{r.p50_ms - base.p50_ms:+.1f}" if delta and base else "",
            f"{r.p95_ms:.1f}",
            f"{r.service_cpu_ms:.2f}",
            f"{r.service_cpu_ms - base.service_cpu_ms:+.2f}" if delta and base else "",
            "" if math.isnan(r.spans_per_job) else f"{r.spans_per_job:.1f}",
            "" if r.counted is None else ("yes" if r.counted else "NO"),
        )
    console.print(table)


def print_watch_costs(console: Console, costs: dict[str, float]) -> None:
    table = Table(title="The job watch alone, in process: µs per job", caption="Δ = minus off")
    for column in ("mode", "µs/job", "Δ"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, cost in costs.items():
        delta = "" if mode == "off" else f"{cost - costs.get('off', math.nan):+.1f}"
        table.add_row(mode, f"{cost:.1f}", delta)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=150, help="jobs per mode and language (150)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up jobs per row (20)")
    parser.add_argument("--languages", default="bash,python")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--backend", default=None, help="sandbox backend (default: auto)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-call deadline, s (60)")
    parser.add_argument(
        "--watch-n", type=int, default=2000, help="jobs per repeat of the watch alone (2000)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    wanted = args.languages.split(",")
    workloads = [w for w in WORKLOADS if w.language in wanted]
    modes = args.modes.split(",")
    console = Console(stderr=args.json)
    console.width = max(console.width, 120)
    progress = Console(stderr=True)

    rows: list[Row] = []
    watch: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        servers = []
        for mode in modes:
            settings, collector = dict(MODES[mode]), None
            if "otlp_endpoint" in settings:
                collector, at = stack.enter_context(collector_at())
                settings["otlp_endpoint"] = f"http://{at}"
            progress.log(f"starting the {mode} server: {settings}")
            address = stack.enter_context(embedded_server(args.backend, True, settings))
            client = ServiceClient(address, args.timeout)
            stack.callback(client.close)
            servers.append(Server(mode, address, client, collector, _server_pid(address)))
        for workload in workloads:
            progress.log(f"{workload.language}: {args.n} jobs on each of {', '.join(modes)}")
            rows += measure(servers, workload, args)
        progress.log(f"the job watch alone, 5 x {args.watch_n} jobs per mode")
        with collector_at() as (_, at):
            for mode in modes:
                settings = {**MODES[mode]}
                if "otlp_endpoint" in settings:
                    settings["otlp_endpoint"] = f"http://{at}"
                watch[mode] = watch_cost_us(settings, args.watch_n)
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "watch_us": watch}, indent=2))
    else:
        print_rows(console, rows)
        print_watch_costs(console, watch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
