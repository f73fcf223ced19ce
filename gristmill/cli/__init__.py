"""The `gristmill` command: run, resolve or describe a file as a job, cancel a job, list
runtimes, check the host, serve, demo, conformance.

Commands that talk to a server use `--target` (or `$GRISTMILL_TARGET`): `HOST:PORT`,
`unix:PATH`, or `embedded` for a server inside the command for its duration. Without
one they use the user's local server, started in the background on first use and
reused by later commands (`gristmill stop` stops it; see `gristmill.local`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from gristmill import __version__
from gristmill.cli import admin, conformance, inspect, queue, run, serve
from gristmill.cli.base import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Formatter,
    Interrupted,
    UsageError,
)
from gristmill.client import too_large
from gristmill.errors import GristmillError
from gristmill.jsonview import failure
from gristmill.local import client_only, server_part_missing
from gristmill.render import print_json

__all__ = ["EXIT_INTERRUPTED", "EXIT_JOB_FAILED", "EXIT_OK", "EXIT_USAGE", "ROOMS", "main"]

ROOMS = (run.ROOM, inspect.ROOM, admin.ROOM, serve.ROOM, conformance.ROOM, queue.ROOM)
"""Every group of commands, in the order `gristmill --help` lists them."""

NETWORK_HINT = (
    "the server does not allow the network: start it with `gristmill serve --allow-network` "
    "(or GRISTMILL_MAX_LIMITS_NETWORK=true; the local server picks that variable up too)"
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gristmill",
        description=__doc__,
        epilog=EXIT_CODES + "\nhelp on a command: gristmill COMMAND --help",
        formatter_class=Formatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for room in ROOMS:
        room.add(commands)
    return parser


def _hint(error: grpc.RpcError) -> str:
    details = error.details() or ""
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT and "limits.network" in details:
        return NETWORK_HINT
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        return "give a token (--token-file, $GRISTMILL_TOKEN) or a client certificate (--tls-cert)"
    if too_large(error):
        return (
            "a message was over a gRPC size limit (the server is not full): retrying will not help"
        )
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return "is the server running? (--target, $GRISTMILL_TARGET)"
    return ""


def _fail(json_mode: bool, code: str, message: str, hint: str = "") -> int:
    if json_mode:
        print_json(failure(code, message, hint))
    else:
        print(f"gristmill: {message}", file=sys.stderr)
        if hint:
            print(f"gristmill: hint: {hint}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; every failure it can explain ends as a message and exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded = {name: body for room in ROOMS for name, body in room.forwarded.items()}
    if argv[:1] and argv[0] in forwarded:
        return forwarded[argv[0]](argv[1:])
    argv, script_argv = run.script_arguments(argv)
    options = _build_parser().parse_args(argv)
    if script_argv:
        options.argv = [*options.argv, *script_argv]
    json_mode = bool(getattr(options, "json", False))
    commands = {name: body for room in ROOMS for name, body in room.commands.items()}
    try:
        return commands[options.command](options)
    except Interrupted as interrupted:
        if json_mode:
            print_json(failure("CANCELLED", f"interrupted: job {interrupted} cancelled"))
        else:
            print(f"\ngristmill: interrupted: job {interrupted} cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ngristmill: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as error:
        return _fail(json_mode, "USAGE", str(error))
    except GristmillError as error:
        return _fail(json_mode, type(error).__name__, str(error))
    except grpc.RpcError as error:
        return _fail(json_mode, error.code().name, error.details() or "", _hint(error))
    except ModuleNotFoundError:
        # A client-only install (no `server` extra) asked for what only a server has.
        if missing := server_part_missing():
            return _fail(json_mode, "CLIENT_ONLY", client_only(missing))
        raise
