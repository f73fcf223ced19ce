"""What checking callers costs per call: none, a bearer token, TLS with a token, mutual TLS.

The server runs a runner that answers at once, so that the numbers are the transport's
and the access check's, not a sandbox's; the configurations take turns, round after
round, so that a machine's changing load falls on each alike.

    .venv/bin/python bench/access.py            # a table
    .venv/bin/python bench/access.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gristmill.client import Client, Credentials, RetryPolicy
from gristmill.config import load_config
from gristmill.isolation.backend import SandboxInfo
from gristmill.model import Job, JobEvent, Outcome, Verdict
from gristmill.server import BackgroundServer
from tests.server.certificates import Authority

RUNTIME = (
    'name = "null"\nextensions = [".null"]\nsource_file = "main.null"\nrun = ["/bin/true"]\n'
    'requires = ["/bin/true"]\nversion_command = ["/bin/echo", "1"]\n'
)


class NullRunner:
    """Answers every job at once with SUCCESS."""

    def sandbox_info(self) -> SandboxInfo:
        return SandboxInfo(backend="null", enforced_limits=(), detail="")

    async def run(
        self,
        job: Job,
        on_event: Callable[[JobEvent], None] | None = None,
        cancel: asyncio.Event | None = None,
    ) -> Outcome:
        return Outcome(job_id=job.id, verdict=Verdict.SUCCESS, result_json="1")


def _setups(root: Path) -> dict[str, tuple[dict[str, object], Credentials]]:
    authority = Authority(root / "ca", "bench-ca")
    server, client = authority.issue("server", server=True), authority.issue("bench")
    tls: dict[str, object] = {
        "auth.tls_cert_file": str(server.cert),
        "auth.tls_key_file": str(server.key),
    }
    tokens: dict[str, object] = {"auth.tokens": "bench:bench-token"}
    return {
        "none": ({}, Credentials()),
        "token": (tokens, Credentials(token="bench-token")),
        "tls + token": (
            {**tls, **tokens},
            Credentials(token="bench-token", ca_file=authority.cert_file),
        ),
        "mutual tls": (
            {**tls, "auth.client_ca_file": str(authority.cert_file)},
            Credentials(ca_file=authority.cert_file, cert_file=client.cert, key_file=client.key),
        ),
    }


def measure(calls: int, rounds: int) -> dict[str, dict[str, float]]:
    root = Path(tempfile.mkdtemp(prefix="gristmill-bench-access-"))
    (root / "runtimes" / "null").mkdir(parents=True)
    (root / "runtimes" / "null" / "runtime.toml").write_text(RUNTIME)
    (root / "profiles").mkdir()
    (root / "profiles" / "base.toml").write_text("")
    setups = _setups(root)
    seconds: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, (settings, credentials) in setups.items():
            config = load_config(
                overrides={
                    "address": "127.0.0.1:0",
                    "work_dir": root / "work",
                    "runtimes_dir": root / "runtimes",
                    "profiles_dir": root / "profiles",
                    **settings,
                }
            )
            retry = RetryPolicy(wait_for_ready=False)
            with (
                BackgroundServer(config, runner=NullRunner()) as address,
                Client(address, retry=retry, credentials=credentials) as client,
            ):
                for _ in range(20):  # the connection, the handshake, the first calls
                    client.execute("null", "", timeout_s=10)
                for _ in range(calls):
                    start = time.perf_counter()
                    client.execute("null", "", timeout_s=10)
                    seconds[name].append(time.perf_counter() - start)
    return {
        name: {
            "p50_ms": statistics.median(values) * 1000,
            "p95_ms": statistics.quantiles(values, n=20)[-1] * 1000,
            "calls": len(values),
        }
        for name, values in seconds.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--calls", type=int, default=300, help="calls per round (300)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    options = parser.parse_args()
    results = measure(options.calls, options.rounds)
    if options.json:
        print(json.dumps(results))
        return
    print(f"{'access':<12} {'p50 ms':>8} {'p95 ms':>8} {'calls':>6}")
    for name, row in results.items():
        print(f"{name:<12} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['calls']:>6.0f}")


if __name__ == "__main__":
    main()
