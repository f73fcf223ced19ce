"""`gristmill serve`: the gRPC server until SIGINT or SIGTERM (the first drains, a second
hurries the drain), or until idle for `--idle-exit-s` (how the local server ends)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path

from gristmill.cli import target
from gristmill.cli.base import EXIT_OK, Room, Subcommands, UsageError, command
from gristmill.config import LOG_FORMATS, LOG_LEVELS, ServerConfig
from gristmill.interceptors import Activity

__all__ = ["ROOM"]


def _add(commands: Subcommands) -> None:
    serve = command(
        commands,
        "serve",
        "run the gRPC server",
        "Runs the gRPC server until SIGINT or SIGTERM. Settings come from the TOML file, "
        "then GRISTMILL_* variables, then these flags.",
        "  gristmill serve --address 0.0.0.0:50051 --concurrency 4\n"
        "  gristmill serve --address unix:/run/gristmill.sock --allow-network",
    )
    target.server_flags(serve)
    _settings_flags(serve)
    serve.add_argument(
        "--idle-exit-s",
        type=float,
        metavar="S",
        help="exit after this long without a call (default: never; the local server: 900)",
    )


def _settings_flags(serve: argparse.ArgumentParser) -> None:
    """The flags of the server's settings beyond `target.server_flags`; each `dest` is the
    setting's flat key, as `target.config` takes it."""
    serve.add_argument(
        "--address",
        metavar="ADDRESS",
        help="HOST:PORT or unix:PATH to listen on (default: 127.0.0.1:50051)",
    )
    serve.add_argument(
        "--concurrency",
        dest="max_concurrent_jobs",
        type=int,
        metavar="N",
        help="jobs running at once (default: the number of CPUs)",
    )
    serve.add_argument(
        "--queue",
        dest="max_queued_jobs",
        type=int,
        metavar="N",
        help="jobs waiting beyond those (default: 4 x concurrency)",
    )
    for flag, key, metavar, text in (
        ("--default-timeout-ms", "default_limits.wall_time_ms", "MS", "default wall time (10000)"),
        (
            "--default-memory-bytes",
            "default_limits.memory_bytes",
            "BYTES",
            "default memory (256 MiB)",
        ),
        ("--max-timeout-ms", "max_limits.wall_time_ms", "MS", "largest wall time (900000)"),
        ("--max-memory-bytes", "max_limits.memory_bytes", "BYTES", "largest memory (8 GiB)"),
        ("--max-processes", "max_limits.processes", "N", "largest process limit (1024)"),
        ("--max-output-bytes", "max_limits.output_bytes", "BYTES", "largest output cap (64 MiB)"),
    ):
        serve.add_argument(flag, dest=key, type=int, metavar=metavar, help=text)
    serve.add_argument(
        "--allow-network",
        dest="max_limits.network",
        action="store_true",
        default=None,
        help="let jobs ask for the network (default: refused)",
    )
    serve.add_argument(
        "--drain-grace-s",
        dest="drain_grace_s",
        type=float,
        metavar="S",
        help="at SIGTERM, how long jobs in flight may take before they are cancelled (30)",
    )
    access = serve.add_argument_group("access (see README, Operations: access and shutdown)")
    for flag, key, text in (
        ("--tls-cert", "auth.tls_cert_file", "the server's certificate chain (PEM): TLS"),
        ("--tls-key", "auth.tls_key_file", "its private key (PEM)"),
        ("--client-ca", "auth.client_ca_file", "CAs of client certificates: mutual TLS"),
        ("--tokens-file", "auth.tokens_file", "bearer tokens, NAME:TOKEN a line"),
    ):
        access.add_argument(flag, dest=key, type=Path, metavar="FILE", help=text)
    access.add_argument(
        "--insecure",
        dest="auth.insecure",
        action="store_true",
        default=None,
        help="listen beyond loopback without authentication, or tokens without TLS",
    )
    telemetry = serve.add_argument_group("logs, metrics, traces")
    telemetry.add_argument(
        "--log-level",
        dest="telemetry.log_level",
        choices=LOG_LEVELS,
        help="least severe records logged (default: INFO, a line per job)",
    )
    telemetry.add_argument(
        "--log-format",
        dest="telemetry.log_format",
        choices=LOG_FORMATS,
        help="json, logfmt, console, or auto: console on a terminal, else json (default)",
    )
    telemetry.add_argument(
        "--metrics-address",
        dest="telemetry.metrics_address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: none)",
    )
    telemetry.add_argument(
        "--otlp-endpoint",
        dest="telemetry.otlp_endpoint",
        metavar="URL",
        help="export traces to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317 "
        "(default: no tracing)",
    )


async def _idle(activity: Activity, idle_s: float, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        await asyncio.sleep(min(5.0, idle_s / 4))
        if activity.idle_s() > idle_s:
            logging.getLogger("gristmill").info("no call for %.0f s: exiting", idle_s)
            stopping.set()


async def _serve_until_signalled(config: ServerConfig, idle_exit_s: float | None) -> None:
    from gristmill.server import start

    activity = Activity()
    server = await start(config, interceptors=[activity])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def signalled() -> None:
        # The first signal drains; a second one cuts the drain's grace short.
        if stopping.is_set():
            server.hurry()
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, signalled)
    idle = asyncio.ensure_future(_idle(activity, idle_exit_s, stopping)) if idle_exit_s else None
    await stopping.wait()
    if idle is not None:
        idle.cancel()
    await server.stop()


def _remove_socket(address: str) -> None:
    if address.startswith("unix:"):
        Path(address.removeprefix("unix:")).unlink(missing_ok=True)


def _check_address(address: str) -> None:
    """One clear line, before anything starts, when the address is taken."""
    if address.startswith("unix:"):
        path = Path(address.removeprefix("unix:"))
        if path.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # a dead server's socket
                    return
            raise UsageError(f"cannot listen on {address}: a server is already listening there")
        return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot listen on {address}: {error}") from error
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as error:
            why = "the address is in use (another server?)" if error.errno == 98 else error.strerror
            raise UsageError(
                f"cannot listen on {address}: {why}; choose another with --address"
            ) from None


def _serve(options: argparse.Namespace) -> int:
    config = target.config(options)
    _check_address(config.address)
    from gristmill.observability import logs

    logs.configure(config.telemetry)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(config, options.idle_exit_s))
    _remove_socket(config.address)
    return EXIT_OK


ROOM = Room(add=_add, commands={"serve": _serve})
