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

from gristmill import config_flags
from gristmill.cli import target
from gristmill.cli.base import EXIT_OK, Room, Subcommands, UsageError, command
from gristmill.config import ServerConfig
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
    """The flags of the server's settings beyond `target.server_flags`, from their
    declarations; each `dest` is the setting's flat key, as `target.config` takes it."""
    config_flags.add_flags(serve, without=target.SERVER_FLAG_KEYS)


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
