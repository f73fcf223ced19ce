"""gristmill's latency and throughput, beside the bare interpreters, in one run.

For each language whose `runtimes/<lang>/runtime.toml` has a `[bench]` table (its
trivial job, whose result is 1, and the bare program to compare it with):

- Execute latency, p50 and p95 over N sequential calls after a warm-up, and the bare
  program's start (e.g. `/usr/bin/python3 -c pass`, `bash -c true`) via subprocess, same N;
- jobs per second with 1, 2, 4, 8 concurrent clients for a few seconds each, and bare
  interpreter starts per second with as many concurrent spawners;

then the ratios service/bare. The service runs in a child process (embedded
`BackgroundServer`), so that the clients here do not share its interpreter lock;
`--address` measures a server that is already running instead.

Numbers depend on the machine and its load: they belong here, never in a pass/fail test.

    .venv/bin/python bench/latency.py                  # rich tables
    .venv/bin/python bench/latency.py --json           # one JSON object on stdout
    .venv/bin/python bench/latency.py -n 50 --duration 2 --clients 1,2   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from gristmill.v1 import runtime_pb2 as pb  # noqa: E402
from gristmill.v1 import runtime_pb2_grpc as pb_grpc  # noqa: E402

# The generated stub is untyped; held as Any so that calling it is not an untyped call.
RuntimeStub: Any = pb_grpc.RuntimeStub

# A clean environment for the bare runs, as a job gets one (an inherited
# NODE_EXTRA_CA_CERTS and the like cost start-up time).
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}


@dataclass(frozen=True)
class Workload:
    """A language's `[bench]` table: its trivial job and the bare program beside it.

    `bare` runs in a scratch directory holding `bare_files`, after `bare_setup` (argv
    lists run there once, untimed: e.g. compiling the bare program of a compiled language);
    `{folder}` in any of their arguments is the language's folder. A compiled language's
    `[bench.cold]` adds the cold build: `code` with a `{nonce}` (each job new, so each
    one compiles), beside `bare`, the compiler alone on the same files in that directory.
    """

    language: str
    code: str
    bare_argv: tuple[str, ...]
    bare_files: tuple[tuple[str, str], ...] = ()
    bare_setup: tuple[tuple[str, ...], ...] = ()
    cold_code: str = ""
    cold_bare_argv: tuple[str, ...] = ()
    # The trivial job's result as JSON, when it is not 1 (e.g. a SQL job's row `[{"1": 1}]`).
    result_json: str = "1"


def _in_folder(argv: Sequence[str], folder: str) -> tuple[str, ...]:
    """`argv` with `{folder}` replaced by the language's folder (e.g. a wrapper to compile)."""
    return tuple(arg.replace("{folder}", folder) for arg in argv)


def load_workloads(runtimes_dir: Path = REPO_ROOT / "runtimes") -> tuple[Workload, ...]:
    workloads = []
    for manifest in sorted(runtimes_dir.glob("*/runtime.toml")):
        data = tomllib.loads(manifest.read_text())
        table = data.get("bench")
        if table is None:
            continue
        cold = table.get("cold", {})
        folder = str(manifest.parent.resolve())
        workloads.append(
            Workload(
                language=data["name"],
                code=table["code"],
                bare_argv=_in_folder(table["bare"], folder),
                bare_files=tuple(table.get("bare_files", {}).items()),
                bare_setup=tuple(_in_folder(argv, folder) for argv in table.get("bare_setup", ())),
                cold_code=cold.get("code", ""),
                cold_bare_argv=_in_folder(cold.get("bare", ()), folder),
                result_json=table.get("result_json", "1"),
            )
        )
    return tuple(workloads)


WORKLOADS = load_workloads()


@contextlib.contextmanager
def bare_directory(workload: Workload) -> Iterator[Path]:
    """A scratch directory with the bare program's files, its set-up done."""
    with tempfile.TemporaryDirectory(prefix=f"gristmill-bare-{workload.language}-") as name:
        directory = Path(name)
        for relative, text in workload.bare_files:
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_text(text)
        for argv in workload.bare_setup:
            subprocess.run(argv, cwd=directory, env=BARE_ENV, check=True, capture_output=True)
        yield directory


@dataclass
class Latency:
    n: int
    failures: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float


@dataclass
class Throughput:
    clients: int
    duration_s: float
    completed: int
    failures: int
    per_s: float
    # The share of the service's jobs that found a warm sandbox (not for bare starts).
    warm_share: float = math.nan


@dataclass
class LanguageResult:
    language: str
    # "warm" (the server keeps warm sandboxes), "cold" (it does not), or "" (--address).
    pool: str
    # The share of the latency run's jobs that ran in a warm sandbox.
    warm_share: float
    service: Latency
    bare: Latency
    bare_command: str
    # Medians of the server's own phase timings over the latency run, in ms.
    phases_ms: dict[str, float] = field(default_factory=dict)
    sandbox: str = ""
    throughput: list[dict[str, Any]] = field(default_factory=list)
    first_failure: str = ""
    # The cold build (compiled languages): whole Execute and its build phase, beside
    # the compiler alone, p50 in ms.
    cold: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.language} {self.pool}" if self.pool else self.language


# --- statistics ------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(samples_s: list[float], failures: int) -> Latency:
    values = sorted(s * 1000 for s in samples_s)
    return Latency(
        n=len(values),
        failures=failures,
        p50_ms=percentile(values, 50),
        p95_ms=percentile(values, 95),
        mean_ms=statistics.fmean(values) if values else math.nan,
        min_ms=values[0] if values else math.nan,
    )


# --- the service ------------------------------------------------------------------


def _serve(
    conn: multiprocessing.connection.Connection,
    work_dir: str,
    backend: str | None,
    pool: bool,
    telemetry: dict[str, str] | None,
    fork_interpreters: bool = False,
) -> None:
    """Child process: runs the embedded server until told to stop."""
    from gristmill.config import BackendName, PoolConfig, ServerConfig, TelemetryConfig
    from gristmill.observability import logs
    from gristmill.server.app import BackgroundServer

    try:
        telemetry_config = TelemetryConfig(**(telemetry or {}))
        if telemetry is not None:
            # As a server would: its log lines written to a file.
            logs.configure(telemetry_config, Path(work_dir, "server.log").open("a"))  # noqa: SIM115
        config = ServerConfig(
            address="127.0.0.1:0",
            work_dir=Path(work_dir),
            sandbox_backend=cast(BackendName | None, backend),  # ServerConfig checks it
            pool=PoolConfig(enabled=pool, fork_interpreters=fork_interpreters),
            telemetry=telemetry_config,
        )
        with BackgroundServer(config) as address:
            conn.send(("ok", str(address)))
            conn.recv()  # any message, or the parent going away, stops it
    except EOFError:
        pass
    except BaseException as error:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
        raise


@contextlib.contextmanager
def embedded_server(
    backend: str | None,
    pool: bool = True,
    telemetry: dict[str, str] | None = None,
    fork_interpreters: bool = False,
) -> Iterator[str]:
    """A server in a child process; `telemetry` holds `telemetry.*` settings, and its log
    then goes to `server.log` in its work dir (without it: Python's default, warnings).
    `fork_interpreters`: `pool.fork_interpreters` (Python forked from a template)."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work_dir:
        Path(work_dir).chmod(0o755)
        process = context.Process(
            target=_serve,
            args=(child, work_dir, backend, pool, telemetry, fork_interpreters),
            daemon=True,
        )
        process.start()
        child.close()
        try:
            if not parent.poll(60):
                raise RuntimeError("the embedded server did not start within 60 s")
            status, value = parent.recv()
            if status != "ok":
                raise RuntimeError(f"the embedded server failed to start: {value}")
            yield value
        finally:
            with contextlib.suppress(OSError):
                parent.send("stop")
            parent.close()
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()


def make_job(workload: Workload, tag: str, code: str | None = None) -> pb.ExecuteRequest:
    # Every call needs its own id: a repeated id returns the first outcome (idempotency).
    job_id = f"bench-{workload.language}-{tag}-{uuid.uuid4().hex[:12]}"
    job = pb.Job(id=job_id, language=workload.language, code=code or workload.code)
    return pb.ExecuteRequest(job=job)


def outcome_problem(outcome: pb.Outcome, expected_json: str = "1") -> str:
    """Why an outcome is not the expected success, or "" when it is."""
    expected = {"1", '"1"'} if expected_json == "1" else {expected_json}
    if outcome.verdict == pb.SUCCESS and outcome.result_json.strip() in expected:
        return ""
    return (
        f"verdict={pb.Verdict.Name(outcome.verdict)} result={outcome.result_json!r} "
        f"detail={outcome.detail!r} error={outcome.error.name}: {outcome.error.message!r} "
        f"stderr={outcome.stderr.data[-300:]!r}"
    )


class ServiceClient:
    def __init__(self, address: str, timeout_s: float) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = RuntimeStub(self.channel)
        self.timeout_s = timeout_s

    def execute(self, request: pb.ExecuteRequest) -> pb.Outcome:
        outcome: pb.Outcome = self.stub.Execute(request, timeout=self.timeout_s)
        return outcome

    def close(self) -> None:
        self.channel.close()


# --- measurements -------------------------------------------------------------------


def time_calls(call: Callable[[], str], n: int) -> tuple[list[float], int, str]:
    """Runs `call` n times; its durations, the number of failures and the first problem."""
    samples: list[float] = []
    failures = 0
    first = ""
    for _ in range(n):
        start = time.perf_counter()
        problem = call()
        elapsed = time.perf_counter() - start
        if problem:
            failures += 1
            first = first or problem
        else:
            samples.append(elapsed)
    return samples, failures, first


def bare_call(argv: Sequence[str], cwd: Path | None = None) -> Callable[[], str]:
    def call() -> str:
        completed = subprocess.run(
            argv,
            cwd=cwd,
            env=BARE_ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return "" if completed.returncode == 0 else f"exit {completed.returncode}"

    return call


def service_call(
    client: ServiceClient, workload: Workload, outcomes: list[pb.Outcome] | None = None
) -> Callable[[], str]:
    def call() -> str:
        try:
            outcome = client.execute(make_job(workload, "lat"))
        except grpc.RpcError as error:
            return f"rpc {error.code().name}: {error.details()}"
        if outcomes is not None:
            outcomes.append(outcome)
        return outcome_problem(outcome, workload.result_json)

    return call


def run_for(
    clients: int, duration_s: float, make_call: Callable[[int], Callable[[], str]]
) -> Throughput:
    """`clients` threads, each calling its own callable in a loop until the deadline."""
    calls = [make_call(i) for i in range(clients)]
    completed = [0] * clients
    failed = [0] * clients
    barrier = threading.Barrier(clients + 1)
    deadline = 0.0

    def worker(index: int) -> None:
        barrier.wait()
        call = calls[index]
        while time.perf_counter() < deadline:
            if call():
                failed[index] += 1
            else:
                completed[index] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    deadline = start + duration_s
    barrier.wait()
    for thread in threads:
        # Bounded: a call in flight at the deadline has its own timeout.
        thread.join(duration_s + 120)
    elapsed = time.perf_counter() - start
    done = sum(completed)
    return Throughput(
        clients=clients,
        duration_s=round(elapsed, 3),
        completed=done,
        failures=sum(failed),
        per_s=done / elapsed if elapsed > 0 else math.nan,
    )


def median_phases(outcomes: list[pb.Outcome]) -> dict[str, float]:
    phases: dict[str, list[float]] = {
        "queued": [],
        "prepare": [],
        "sandbox_setup": [],
        "run": [],
        "wall": [],
    }
    for outcome in outcomes:
        usage = outcome.usage
        phases["queued"].append(usage.phases.queued_ms)
        phases["prepare"].append(usage.phases.prepare_ms)
        phases["sandbox_setup"].append(usage.phases.sandbox_setup_ms)
        phases["run"].append(usage.phases.run_ms)
        phases["wall"].append(usage.wall_time_ms)
    return {name: statistics.median(values) for name, values in phases.items() if values}


def measure_service(
    address: str, workload: Workload, clients: int, args: argparse.Namespace
) -> Throughput:
    """Jobs per second with `clients` concurrent clients, each on its own channel, and the
    share of their jobs that found a warm sandbox."""
    service_clients = [ServiceClient(address, args.timeout) for _ in range(clients)]
    outcomes: list[list[pb.Outcome]] = [[] for _ in range(clients)]
    try:
        rate = run_for(
            clients,
            args.duration,
            lambda i: service_call(service_clients[i], workload, outcomes[i]),
        )
        done = [o for own in outcomes for o in own]
        if done:
            rate.warm_share = sum(o.warm_sandbox for o in done) / len(done)
        return rate
    finally:
        for service_client in service_clients:
            service_client.close()


def bench_language(
    address: str, workload: Workload, args: argparse.Namespace, console: Console
) -> LanguageResult:
    with bare_directory(workload) as directory:
        result = _bench_language(
            address, workload, bare_call(workload.bare_argv, directory), args, console
        )
        if workload.cold_code and args.cold_n > 0:
            result.cold = measure_cold(address, workload, directory, args, console)
        return result


def measure_cold(
    address: str, workload: Workload, directory: Path, args: argparse.Namespace, console: Console
) -> dict[str, Any]:
    """Jobs whose code is new each time (so each compiles), beside the compiler alone."""
    console.log(f"{workload.language}: cold builds, n={args.cold_n} (service, then compiler)")
    client = ServiceClient(address, args.timeout)
    builds: list[float] = []

    def cold_call() -> str:
        code = workload.cold_code.replace("{nonce}", uuid.uuid4().hex)
        try:
            outcome = client.execute(make_job(workload, "cold", code))
        except grpc.RpcError as error:
            return f"rpc {error.code().name}: {error.details()}"
        builds.append(outcome.usage.phases.build_ms)
        return outcome_problem(outcome)

    try:
        samples, failures, problem = time_calls(cold_call, args.cold_n)
    finally:
        client.close()
    bare_samples, bare_failures, bare_problem = time_calls(
        bare_call(workload.cold_bare_argv, directory), args.cold_n
    )
    return {
        "service": asdict(summarize(samples, failures)),
        "build_phase_p50_ms": statistics.median(builds) if builds else math.nan,
        "bare": asdict(summarize(bare_samples, bare_failures)),
        "bare_command": " ".join(workload.cold_bare_argv),
        "first_failure": problem or bare_problem,
    }


def _bench_language(
    address: str,
    workload: Workload,
    bare: Callable[[], str],
    args: argparse.Namespace,
    console: Console,
) -> LanguageResult:
    client = ServiceClient(address, args.timeout)
    try:
        console.log(f"{workload.language}: warm-up ({args.warmup})")
        _, warm_failures, warm_problem = time_calls(service_call(client, workload), args.warmup)
        if warm_failures == args.warmup and args.warmup > 0:
            raise SystemExit(f"bench: every {workload.language} warm-up job failed: {warm_problem}")
        time_calls(bare, args.warmup)

        console.log(f"{workload.language}: latency, n={args.n} (service, then bare)")
        outcomes: list[pb.Outcome] = []
        samples, failures, problem = time_calls(service_call(client, workload, outcomes), args.n)
        bare_samples, bare_failures, bare_problem = time_calls(bare, args.n)
    finally:
        client.close()
    result = LanguageResult(
        language=workload.language,
        pool=args.pool_mode,
        warm_share=sum(o.warm_sandbox for o in outcomes) / len(outcomes) if outcomes else 0.0,
        service=summarize(samples, failures),
        bare=summarize(bare_samples, bare_failures),
        bare_command=" ".join(workload.bare_argv),
        phases_ms=median_phases(outcomes),
        sandbox=outcomes[0].sandbox if outcomes else "",
        first_failure=problem or warm_problem or bare_problem,
    )

    for clients in args.clients:
        console.log(f"{workload.language}: throughput, {clients} client(s), {args.duration:g} s")
        service = measure_service(address, workload, clients, args)
        bare_rate = run_for(clients, args.duration, lambda _i: bare)
        result.throughput.append(
            {
                "clients": clients,
                "service": asdict(service),
                "bare": asdict(bare_rate),
                "ratio": service.per_s / bare_rate.per_s if bare_rate.per_s else math.nan,
            }
        )
    return result


# --- report -----------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _ratio(service: float, bare: float) -> str:
    if math.isnan(service) or math.isnan(bare) or bare == 0:
        return "-"
    return f"{service / bare:.2f}x"


def print_tables(console: Console, results: list[LanguageResult], meta: dict[str, Any]) -> None:
    latency = Table(
        title="Execute latency, sequential (ms)",
        caption="ratio = service / bare: below 1.00x the job beat a bare interpreter start",
    )
    for column in (
        "language",
        "warm",
        "p50",
        "p95",
        "bare p50",
        "bare p95",
        "ratio p50",
        "ratio p95",
        "failed",
    ):
        latency.add_column(column, justify="left" if column == "language" else "right")
    for r in results:
        latency.add_row(
            r.label,
            f"{r.warm_share:.0%}",
            _ms(r.service.p50_ms),
            _ms(r.service.p95_ms),
            _ms(r.bare.p50_ms),
            _ms(r.bare.p95_ms),
            _ratio(r.service.p50_ms, r.bare.p50_ms),
            _ratio(r.service.p95_ms, r.bare.p95_ms),
            f"{r.service.failures}/{r.service.n + r.service.failures}",
        )
    console.print(latency)

    phases = Table(title="Server-side phases, median per job (ms)")
    names = ["queued", "prepare", "sandbox_setup", "run", "wall"]
    phases.add_column("language")
    for name in names:
        phases.add_column(name, justify="right")
    for r in results:
        phases.add_row(r.label, *(_ms(r.phases_ms.get(name, math.nan)) for name in names))
    console.print(phases)

    throughput = Table(
        title=f"Throughput, {meta['duration_s']:g} s per row (jobs or starts per second)",
        caption="ratio = service / bare: above 1.00x the service beat bare interpreter starts",
    )
    for column in ("language", "clients", "warm", "service /s", "bare /s", "ratio", "failed"):
        throughput.add_column(column, justify="left" if column == "language" else "right")
    for r in results:
        for row in r.throughput:
            service, bare = row["service"], row["bare"]
            throughput.add_row(
                r.label,
                str(row["clients"]),
                "-" if math.isnan(service["warm_share"]) else f"{service['warm_share']:.0%}",
                f"{service['per_s']:.1f}",
                f"{bare['per_s']:.1f}",
                "-" if math.isnan(row["ratio"]) else f"{row['ratio']:.2f}x",
                str(service["failures"] + bare["failures"]),
            )
    console.print(throughput)
    colds = [r for r in results if r.cold]
    if colds:
        cold = Table(
            title=f"Cold build: new code each job, n={meta['cold_n']} (ms)",
            caption="bare = the compiler alone on the same files, no sandbox",
        )
        for column in ("language", "Execute p50", "build phase p50", "compiler p50", "failed"):
            cold.add_column(column, justify="left" if column == "language" else "right")
        for r in colds:
            service, bare = r.cold["service"], r.cold["bare"]
            cold.add_row(
                r.language,
                _ms(service["p50_ms"]),
                _ms(r.cold["build_phase_p50_ms"]),
                _ms(bare["p50_ms"]),
                str(service["failures"] + bare["failures"]),
            )
        console.print(cold)
    for r in results:
        console.print(
            f"{r.label}: sandbox {r.sandbox or '?'}; bare = [bold]{r.bare_command}[/bold]"
        )
    for r in colds:
        console.print(f"{r.language}: cold bare = [bold]{r.cold['bare_command']}[/bold]")
        if r.cold["first_failure"]:
            console.print(f"[red]{r.language}: first cold failure:[/red] {r.cold['first_failure']}")
    for r in results:
        if r.first_failure:
            console.print(f"[red]{r.language}: first failure:[/red] {r.first_failure}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=200, help="sequential jobs per language (200)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up jobs per language (20)")
    parser.add_argument(
        "--clients", default="1,2,4,8", help="concurrent clients for throughput (1,2,4,8)"
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per throughput row (5)"
    )
    parser.add_argument(
        "--languages",
        default=",".join(w.language for w in WORKLOADS),
        help="which of: " + ", ".join(w.language for w in WORKLOADS),
    )
    parser.add_argument(
        "--cold-n", type=int, default=5, help="cold builds per compiled language (5; 0: none)"
    )
    parser.add_argument("--backend", default=None, help="sandbox backend of the embedded server")
    parser.add_argument(
        "--pool",
        default="warm,cold",
        help="embedded servers to run, in turn: with warm sandboxes, without (warm,cold); "
        "forked, forked-cold: the same with pool.fork_interpreters (process backend)",
    )
    parser.add_argument("--address", default=None, help="bench this running server instead")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-call deadline, s (60)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    args.pools = [p.strip() for p in args.pool.split(",") if p.strip()]
    if not args.pools or set(args.pools) - {"warm", "cold", "forked", "forked-cold"}:
        parser.error("--pool takes warm, cold, forked or forked-cold")
    if args.n < 1 or args.duration <= 0 or any(c < 1 for c in args.clients):
        parser.error("-n, --duration and --clients must be positive")
    known = {w.language: w for w in WORKLOADS}
    wanted = [name.strip() for name in args.languages.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        parser.error(f"unknown language(s): {', '.join(unknown)}")
    args.workloads = [known[name] for name in wanted]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress goes to stderr; with --json, stdout holds the JSON object alone.
    console = Console(stderr=args.json)
    # Piped (make, CI) rich assumes 80 columns, too narrow for the latency table.
    console.width = max(console.width, 100)
    progress = Console(stderr=True)
    meta: dict[str, Any] = {
        "n": args.n,
        "warmup": args.warmup,
        "duration_s": args.duration,
        "clients": args.clients,
        "cold_n": args.cold_n,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    started = time.perf_counter()
    results = []
    for mode in [""] if args.address else args.pools:
        with contextlib.ExitStack() as stack:
            args.pool_mode = mode
            if args.address:
                address = args.address
            else:
                backend = args.backend or "auto"
                progress.log(f"starting the embedded server (backend: {backend}, pool: {mode})")
                address = stack.enter_context(
                    embedded_server(
                        args.backend,
                        mode in ("warm", "forked"),
                        fork_interpreters=mode.startswith("forked"),
                    )
                )
            meta["address"] = address
            results += [bench_language(address, w, args, progress) for w in args.workloads]
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)

    if args.json:
        print(json.dumps({"meta": meta, "languages": [asdict(r) for r in results]}, indent=2))
    else:
        print_tables(console, results, meta)
        console.print(
            f"[dim]{meta['cpus']} CPUs, Python {meta['python']}, kernel {meta['kernel']}, "
            f"n={args.n}, warm-up {args.warmup}, {meta['elapsed_s']} s in all[/dim]"
        )
    failed = any(r.service.n == 0 for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
