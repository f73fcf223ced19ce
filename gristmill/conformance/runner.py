"""Run conformance cases against any server that speaks the gristmill contract.

Only the generated stubs are used (never `gristmill.client`), so the suite judges
the wire contract itself and can be pointed at any implementation of it.
`main` is what `gristmill conformance` calls; `run_cases` is what the tests call.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gristmill.conformance import report
from gristmill.conformance.cases import (
    Case,
    CaseFileError,
    coverage,
    load_cases,
    not_applicable,
)
from gristmill.conformance.checks import check_outcome
from gristmill.conformance.results import CaseResult
from gristmill.credentials import Credentials
from gristmill.resources import CONFORMANCE_DIR, RUNTIMES_DIR
from gristmill.v1 import runtime_pb2, runtime_pb2_grpc

__all__ = [
    "ServiceAddress",
    "default_cases_dir",
    "language_case_files",
    "list_runtimes",
    "main",
    "run_cases",
]

_DEFAULT_WALL_MS = 60_000
"""A case without a wall-time limit gets the server's default; assume at most this."""
_DEADLINE_MARGIN_S = 30.0
"""Slack on the call's deadline over the job's own limits: the server must answer first."""
_MAX_MESSAGE_BYTES = 64 << 20
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


@dataclass(frozen=True)
class ServiceAddress:
    """Where the server under test listens, as a job inside the sandbox would dial it."""

    host: str
    port: int

    @classmethod
    def from_target(cls, target: str) -> ServiceAddress | None:
        """`host:port`, `[v6]:port` or `dns:///host:port`, resolved to an IP; else None."""
        address = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
        match = re.fullmatch(
            r"\[(?P<v6>[^\]]+)\]:(?P<port>\d+)|(?P<host>[^:/]+):(?P<p>\d+)", address
        )
        if match is None:
            return None
        host = match["v6"] or match["host"]
        try:
            resolved = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
        except OSError:
            return None
        return cls(host=str(resolved), port=int(match["port"] or match["p"]))


def default_cases_dir() -> Path:
    """The shared cases: the package's data, `gristmill/conformance/suite/`."""
    return CONFORMANCE_DIR


def language_case_files() -> list[Path]:
    """Each language folder's own cases and translations, `runtimes/*/conformance.toml`."""
    return sorted(RUNTIMES_DIR.glob("*/conformance.toml"))


def list_runtimes(target: str, timeout_s: float = 10.0) -> runtime_pb2.ListRuntimesResponse:
    """The server's own account of its languages and sandbox."""
    credentials = Credentials.from_env()
    with credentials.channel(target, []) as channel:
        stub = _stub(credentials.authenticated(channel))
        response: runtime_pb2.ListRuntimesResponse = stub.ListRuntimes(
            runtime_pb2.ListRuntimesRequest(), timeout=timeout_s
        )
        return response


def run_cases(
    target: str,
    cases: Sequence[Case],
    *,
    parallelism: int = 2,
    on_result: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Runs every case against the server at `target`; results in the order of `cases`,
    each also handed to `on_result` as it finishes (from the pool's threads).

    A few run at once, as a queue worker's jobs would; each gets a fresh job id so
    that the server's idempotency never answers one case with another's outcome.
    """
    service = ServiceAddress.from_target(target)
    options = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ]
    credentials = Credentials.from_env()
    with (
        credentials.channel(target, options) as channel,
        ThreadPoolExecutor(max_workers=max(1, parallelism)) as pool,
    ):
        stub = _stub(credentials.authenticated(channel))

        def run(case: Case) -> CaseResult:
            result = _run_case(stub, case, service)
            if on_result is not None:
                on_result(result)
            return result

        return list(pool.map(run, cases))


def _progress(total: int) -> Callable[[CaseResult], None]:
    """One line on stderr per finished case: `[12/240] ok   python attack_fork_bomb`."""
    done = itertools.count(1)
    lock = threading.Lock()

    def show(result: CaseResult) -> None:
        with lock:
            status = "ok  " if result.passed else "FAIL"
            case = result.case
            print(f"[{next(done)}/{total}] {status} {case.language} {case.name}", file=sys.stderr)

    return show


def _stub(channel: grpc.Channel) -> Any:
    """The generated client; its module has no type information, hence `Any`."""
    return runtime_pb2_grpc.RuntimeStub(channel)  # type: ignore[no-untyped-call]


def _run_case(stub: Any, case: Case, service: ServiceAddress | None) -> CaseResult:
    if case.needs and service is None:
        return CaseResult(
            case, ("cannot tell the service's host and port from the target",), None, 0.0
        )
    request = runtime_pb2.ExecuteRequest(job=_job(case, service))
    problems: list[str] = []
    started = time.monotonic()
    outcome: runtime_pb2.Outcome
    try:
        if case.partner is not None:
            outcome = _execute_with_partner(stub, case, request, service, problems)
        elif case.cancel_after_ms is None:
            outcome = stub.Execute(request, timeout=_deadline_s(case))
        else:
            outcome = _execute_and_cancel(stub, request, case.cancel_after_ms, problems)
    except grpc.RpcError as error:
        elapsed_ms = (time.monotonic() - started) * 1000
        problems.append(f"rpc error: {error.code().name}: {error.details()}")
        return CaseResult(case, tuple(problems), None, elapsed_ms)
    elapsed_ms = (time.monotonic() - started) * 1000
    problems.extend(check_outcome(case.expect, outcome, elapsed_ms))
    return CaseResult(case, tuple(problems), outcome, elapsed_ms)


def _execute_with_partner(
    stub: Any,
    case: Case,
    request: runtime_pb2.ExecuteRequest,
    service: ServiceAddress | None,
    problems: list[str],
) -> runtime_pb2.Outcome:
    """Runs the case and its partner job at once; the partner must succeed."""
    assert case.partner is not None
    partner_case = dataclasses.replace(case, name=f"{case.name}.partner", code=case.partner)
    partner_request = runtime_pb2.ExecuteRequest(job=_job(partner_case, service))
    partner_call = stub.Execute.future(partner_request, timeout=_deadline_s(case))
    try:
        outcome: runtime_pb2.Outcome = stub.Execute(request, timeout=_deadline_s(case))
    finally:
        partner: runtime_pb2.Outcome = partner_call.result()
    if partner.verdict != runtime_pb2.SUCCESS:
        verdict = runtime_pb2.Verdict.Name(partner.verdict)
        problems.append(f"partner job: expected SUCCESS, got {verdict} ({partner.detail})")
    return outcome


def _execute_and_cancel(
    stub: Any, request: runtime_pb2.ExecuteRequest, cancel_after_ms: int, problems: list[str]
) -> runtime_pb2.Outcome:
    """Starts the job, cancels it by id after `cancel_after_ms`, and returns its outcome."""
    call = stub.Execute.future(request, timeout=_DEFAULT_WALL_MS / 1000 + _DEADLINE_MARGIN_S)
    outcome: runtime_pb2.Outcome
    try:
        outcome = call.result(timeout=cancel_after_ms / 1000)
    except grpc.FutureTimeoutError:
        response = stub.Cancel(runtime_pb2.CancelRequest(job_id=request.job.id), timeout=10)
        if not response.cancelled:
            problems.append("Cancel answered cancelled=false while the job was still running")
        outcome = call.result()
    return outcome


def _job(case: Case, service: ServiceAddress | None) -> runtime_pb2.Job:
    code = case.code
    if "service_port" in case.needs and service is not None:
        code = code.replace("{service_host}", service.host)
        code = code.replace("{service_port}", str(service.port))
    limits = case.limits
    job = runtime_pb2.Job(
        id=_job_id(case),
        language=case.language,
        code=code,
        entry_point=case.entry_point,
        env=dict(case.env),
        stdin=case.stdin.encode(),
        output_files=list(case.output_files),
        context=dict(case.context),
        limits=runtime_pb2.Limits(
            wall_time_ms=limits.wall_time_ms,
            memory_bytes=limits.memory_bytes,
            cpu_time_ms=limits.cpu_time_ms,
            processes=limits.processes,
            output_bytes=limits.output_bytes,
            network=limits.network,
            cpu_millicores=limits.cpu_millicores,
            network_bytes=limits.network_bytes,
            network_connections=limits.network_connections,
        ),
    )
    if case.args is not None:
        job.args.update(dict(case.args))
    if case.args_json is not None:
        job.args_json = case.args_json
    if case.script is not None:
        job.script.argv.extend(case.script)
    return job


def _job_id(case: Case) -> str:
    readable = _JOB_ID_UNSAFE.sub("-", f"{case.language}-{case.name}")
    return f"conformance-{uuid.uuid4().hex[:16]}-{readable}"[:128]


def _deadline_s(case: Case) -> float:
    wall_ms = case.limits.wall_time_ms or _DEFAULT_WALL_MS
    return max(wall_ms, case.expect.within_ms or 0) / 1000 + _DEADLINE_MARGIN_S


def main(argv: list[str]) -> int:
    """`gristmill conformance`: 0 iff every case that ran passed (and at least one ran)."""
    parser = argparse.ArgumentParser(
        prog="gristmill conformance",
        description="Run the conformance cases against a server speaking gristmill.v1.",
    )
    parser.add_argument("--target", required=True, help="the server's address, host:port")
    parser.add_argument(
        "--language",
        action="append",
        metavar="L",
        help="run only this language (repeatable); default: every language the server has",
    )
    parser.add_argument(
        "--cases",
        type=Path,
        default=default_cases_dir(),
        metavar="DIR",
        help="directory of *.toml case files (default: %(default)s)",
    )
    parser.add_argument("--filter", metavar="SUBSTRING", help="run only cases whose name has it")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default: 2)")
    args = parser.parse_args(argv)

    try:
        # The languages' own files go with the repository's cases, not with another set.
        own = language_case_files() if args.cases == default_cases_dir() else []
        cases = load_cases(args.cases, own)
        holes = coverage(cases, not_applicable(own), args.cases)
    except CaseFileError as error:
        print(f"gristmill conformance: {error}", file=sys.stderr)
        return 2
    if args.language:
        cases = [case for case in cases if case.language in args.language]
    if args.filter:
        cases = [case for case in cases if args.filter in case.name]

    try:
        runtimes = list_runtimes(args.target)
    except grpc.RpcError as error:
        print(
            f"gristmill conformance: ListRuntimes on {args.target} failed: "
            f"{error.code().name}: {error.details()}",
            file=sys.stderr,
        )
        return 2
    available = {info.language for info in runtimes.runtimes if info.available}
    unavailable = {
        info.language: info.unavailable_reason or "not available"
        for info in runtimes.runtimes
        if not info.available
    }
    for language in {case.language for case in cases} - available - set(unavailable):
        unavailable[language] = "the server does not list it"
    runnable = [case for case in cases if case.language in available]

    results = run_cases(
        args.target, runnable, parallelism=args.jobs, on_result=_progress(len(runnable))
    )
    backend = runtimes.sandbox.backend
    if args.json:
        report.print_json(args.target, results, unavailable, backend)
    else:
        report.print_table(cases, results, unavailable, backend=backend)
        report.print_coverage(holes)
    if not results:
        print("gristmill conformance: no case ran", file=sys.stderr)
        return 1
    return 0 if all(result.passed for result in results) else 1
