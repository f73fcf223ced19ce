"""What the network costs a job: network-on beside network-off, same server, same run.

A network-on job gets a network namespace of its own, slirp4netns and an nftables
policy before it starts (`gristmill/isolation/netns.py`); a resolve or install step
gets the same. This measures that extra start-up: trivial Python and Bash jobs,
alternately with and without the network, per backend, on a server without warm
sandboxes (cold) and on one with them (warm: the namespace is made ahead of demand, as
the interpreter is started). Latency is the whole Execute call; set-up is the Outcome's
`usage.phases.sandbox_setup_ms`.

It also times the two user-mode networking tools alone, attaching to an empty
namespace until it is configured: slirp4netns (what gristmill uses) and pasta.

    .venv/bin/python bench/network.py              # both backends, 40 jobs each way
    .venv/bin/python bench/network.py -n 10 --backends process --json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from gristmill.v1 import runtime_pb2 as pb  # noqa: E402
from gristmill.v1 import runtime_pb2_grpc as pb_grpc  # noqa: E402

RuntimeStub: Any = pb_grpc.RuntimeStub
JOBS = {"python": "def main():\n    return 1\n", "bash": "echo 1\n"}


def _serve(
    conn: multiprocessing.connection.Connection, work_dir: str, backend: str, warm: bool
) -> None:
    """Child process: a server that allows the network, with warm sandboxes or without."""
    from gristmill.config import MAX_LIMITS, BackendName, PoolConfig, ServerConfig
    from gristmill.server.app import BackgroundServer

    config = ServerConfig(
        address="127.0.0.1:0",
        work_dir=Path(work_dir),
        sandbox_backend=cast(BackendName, backend),  # ServerConfig checks it
        pool=PoolConfig(enabled=warm),
        max_limits=dataclasses.replace(MAX_LIMITS, network=True),
    )
    with BackgroundServer(config) as address:
        conn.send(str(address))
        with contextlib.suppress(EOFError):
            conn.recv()


@contextlib.contextmanager
def server(backend: str, warm: bool) -> Iterator[str]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work_dir:
        Path(work_dir).chmod(0o755)
        process = context.Process(target=_serve, args=(child, work_dir, backend, warm), daemon=True)
        process.start()
        child.close()
        try:
            if not parent.poll(60):
                raise RuntimeError("the embedded server did not start within 60 s")
            yield parent.recv()
        finally:
            with contextlib.suppress(OSError):
                parent.send("stop")
            process.join(30)
            if process.is_alive():
                process.kill()


def measure(address: str, language: str, n: int) -> dict[str, dict[str, float]]:
    """p50 latency and set-up, network off and on, alternating so load hits both alike."""
    samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with grpc.insecure_channel(address) as channel:
        stub = RuntimeStub(channel)
        for index in range(n + 2):
            for network in (False, True):
                job = pb.Job(
                    id=f"bench-net-{uuid.uuid4().hex[:12]}",
                    language=language,
                    code=JOBS[language],
                    limits=pb.Limits(network=network),
                )
                began = time.perf_counter()
                outcome = stub.Execute(pb.ExecuteRequest(job=job), timeout=60)
                elapsed_ms = (time.perf_counter() - began) * 1000
                if outcome.verdict != pb.SUCCESS:
                    raise RuntimeError(f"{language} network={network}: {outcome.detail}")
                if index >= 2:  # the first two are the warm-up
                    setup = float(outcome.usage.phases.sandbox_setup_ms)
                    samples[network].append((elapsed_ms, setup))
    return {
        "off" if not network else "on": {
            "latency_p50_ms": round(statistics.median(s[0] for s in rows), 1),
            "setup_p50_ms": round(statistics.median(s[1] for s in rows), 1),
        }
        for network, rows in samples.items()
    }


def _attach(tool: str) -> float:
    """Seconds until `tool` has configured a fresh, empty network namespace."""
    # Without capabilities: pasta, having dropped its own, may only join a weaker process.
    holder = subprocess.Popen(
        ["unshare", "--net", "setpriv", "--bounding-set=-all", "--inh-caps=-all",
         "--securebits=+noroot", "sleep", "30"]
    )  # fmt: skip
    try:
        time.sleep(0.05)  # unshare has run
        began = time.perf_counter()
        if tool == "slirp4netns":
            ready_r, ready_w = os.pipe()
            slirp = subprocess.Popen(
                [tool, "--configure", "--disable-host-loopback", "--enable-sandbox",
                 "--enable-seccomp", "--ready-fd", str(ready_w), str(holder.pid), "tap0"],
                pass_fds=[ready_w], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            os.close(ready_w)
            ready = os.read(ready_r, 1)
            elapsed = time.perf_counter() - began
            os.close(ready_r)
            slirp.kill()
            slirp.wait()
            if not ready:
                raise RuntimeError("slirp4netns did not configure the namespace")
            return elapsed
        # pasta drops to "nobody" unless told otherwise, and forks into the background
        # once the namespace is configured; --runas 0 lets it join a root-owned one.
        with tempfile.TemporaryDirectory() as scratch:
            pid_file = Path(scratch) / "pid"
            subprocess.run(
                [tool, "--runas", "0:0", "--config-net", "-q", "--no-map-gw", "-t", "none",
                 "-u", "none", "-T", "none", "-U", "none", "-P", str(pid_file), "--netns",
                 f"/proc/{holder.pid}/ns/net"],
                check=True, capture_output=True,
            )  # fmt: skip
            elapsed = time.perf_counter() - began
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            return elapsed
    finally:
        holder.kill()
        holder.wait()


def tools(n: int) -> dict[str, float]:
    """p50 attach time of each tool present, in ms."""
    found = {}
    for tool in ("slirp4netns", "pasta"):
        if shutil.which(tool):
            found[tool] = round(statistics.median(_attach(tool) for _ in range(n)) * 1000, 1)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=40, help="jobs each way per language (40)")
    parser.add_argument("--backends", default="process,nsjail", help="(process,nsjail)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"tools_attach_p50_ms": tools(min(args.n, 15))}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for warm in (False, True):
            with server(backend, warm) as address:
                for language in JOBS:
                    name = f"{backend}/{'warm' if warm else 'cold'}/{language}"
                    results[name] = measure(address, language, args.n)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    attach = results.pop("tools_attach_p50_ms")
    print("attach to a namespace, p50: " + ", ".join(f"{t} {ms} ms" for t, ms in attach.items()))
    print(
        f"{'network: start-up, p50':24} {'off: call':>10} {'on: call':>10} "
        f"{'off: set-up':>12} {'on: set-up':>11} {'extra':>7}"
    )
    for name, row in results.items():
        off, on = row["off"], row["on"]
        extra = on["latency_p50_ms"] - off["latency_p50_ms"]
        print(
            f"{name:24} {off['latency_p50_ms']:>8.1f}ms {on['latency_p50_ms']:>8.1f}ms "
            f"{off['setup_p50_ms']:>10.1f}ms {on['setup_p50_ms']:>9.1f}ms {extra:>+5.1f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
