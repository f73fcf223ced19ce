"""How a command reaches a server: `--target` (or `$GRISTMILL_TARGET`), else the user's
local server (started on first use), or `embedded`, a server inside the command for its
duration; and the server settings its flags give the last two.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gristmill import config_flags
from gristmill.cli.base import UsageError
from gristmill.client import Client, RetryPolicy
from gristmill.config import ServerConfig, load_config
from gristmill.credentials import add_credential_flags, credentials_from_options

if TYPE_CHECKING:
    from gristmill.local import LocalServer

__all__ = ["client", "client_flags", "config", "language", "local", "server", "server_flags"]

TARGET_VARIABLE = "GRISTMILL_TARGET"
EMBEDDED = "embedded"

TARGET_HELP = (
    "the server: HOST:PORT, unix:PATH, or 'embedded' (a server inside this command). "
    f"Default: ${TARGET_VARIABLE}, else the user's local server, started on first use"
)


SERVER_FLAG_KEYS = ("sandbox_backend", "work_dir")
"""The settings a command that calls a server has flags for (`serve` has them all)."""


def server_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that set `ServerConfig` values; each `dest` is the setting's flat key."""
    group = parser.add_argument_group("server settings (embedded or local server)")
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (default: $GRISTMILL_CONFIG)",
    )
    config_flags.add_flags(group, only=SERVER_FLAG_KEYS)


def client_flags(parser: argparse.ArgumentParser, json_help: str) -> None:
    """The flags of a command that calls a server: where it is, how to prove who we are,
    and the settings of a server started for the command."""
    parser.add_argument("--target", metavar="ADDRESS", help=TARGET_HELP)
    parser.add_argument("--json", action="store_true", help=json_help)
    add_credential_flags(parser)
    server_flags(parser)


def config(options: argparse.Namespace) -> ServerConfig:
    """The server settings: the TOML file, then the environment, then the flags."""
    return load_config(getattr(options, "config", None), overrides=config_flags.overrides(options))


def _serve_flags(options: argparse.Namespace) -> tuple[str, ...]:
    """The `serve` flags that give a local server this command's settings."""
    flags: list[str] = []
    if getattr(options, "config", None):
        flags += ["--config", str(options.config.resolve())]
    if getattr(options, "sandbox_backend", None):
        flags += ["--sandbox", options.sandbox_backend]
    if getattr(options, "work_dir", None):
        flags += ["--work-dir", str(options.work_dir.resolve())]
    return tuple(flags)


def local(options: argparse.Namespace) -> LocalServer:
    """The user's local server for these settings (started or not)."""
    from gristmill.local import LocalServer

    return LocalServer.of(config(options), _serve_flags(options))


@contextlib.contextmanager
def server(options: argparse.Namespace) -> Iterator[str]:
    """The address of `--target` (or $GRISTMILL_TARGET), or of the local server, or of an
    embedded one for the command's duration."""
    target = getattr(options, "target", None) or os.environ.get(TARGET_VARIABLE)
    if target and target != EMBEDDED:
        yield target
        return
    if target != EMBEDDED:
        yield local(options).ensure()
        return
    from gristmill.server import BackgroundServer

    with BackgroundServer(dataclasses.replace(config(options), address="127.0.0.1:0")) as address:
        yield address


def client(address: str, options: argparse.Namespace) -> Client:
    """A client that fails fast when no server answers (a person is waiting), retrying
    UNAVAILABLE a few times with backoff rather than waiting for the server to appear."""
    try:
        credentials = credentials_from_options(options)
    except OSError as error:
        raise UsageError(f"credentials: {error}") from error
    return Client(address, retry=RetryPolicy(wait_for_ready=False), credentials=credentials)


def language(options: argparse.Namespace) -> str:
    """`--lang`, else the language whose runtime.toml lists the file's extension (read
    directly: loading the registry's plugins would cost a tenth of a second per command)."""
    if options.lang:
        return str(options.lang)
    from gristmill.languages.registry import language_folders
    from gristmill.languages.spec import load_spec

    suffix = options.file.suffix
    for folder in language_folders(config(options).runtimes_dir):
        spec = load_spec(folder)
        if suffix in spec.extensions:
            return spec.name
    raise UsageError(f"no language for {suffix!r} files: pass --lang")
