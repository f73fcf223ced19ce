"""A server of the user's own, shared by `gristmill` commands on one machine.

Starting a server costs over a second (sandbox backend, fork server, language
folders), and a server remembers resolutions and keeps sandboxes warm: so the first
command that needs a server and was given no `--target` starts one in the background,
on a Unix socket under the user's runtime directory, and later commands reuse it. It
stops by itself after `IDLE_EXIT_S` without a call, or with `gristmill stop`.

There is one such server per configuration (its settings hashed into the socket's
name), so a command with other `--work-dir`, `--sandbox` or `GRISTMILL_*` settings gets
a server of its own. Its log is beside its socket (`<name>.log`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from gristmill import __version__
from gristmill.config import ServerConfig
from gristmill.errors import GristmillError

__all__ = ["IDLE_EXIT_S", "LocalServer", "client_only", "runtime_dir", "server_part_missing"]

IDLE_EXIT_S = 900.0
"""A local server with no call for this long exits."""
START_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 0.5
SERVER_MODULES = ("prometheus_client", "psutil", "pyseccomp", "rich")
"""Modules of the `server` extra a server cannot start without: the client alone has none."""


def server_part_missing() -> list[str]:
    """Which of the server part's modules this install lacks (none: it has the server)."""
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


def client_only(missing: list[str]) -> str:
    """What to do when a command needs the server part and this install is the client's."""
    return (
        "this install has the gristmill client only: this command needs the server part,"
        f" pip install 'gristmill[server]' (missing: {', '.join(missing)}); without it,"
        " Python's gristmill.client.Client('HOST:PORT') calls a running server"
    )


class LocalServerError(GristmillError):
    """The local server could not be started."""


def runtime_dir() -> Path:
    """`$XDG_RUNTIME_DIR/gristmill`, else `<tmp>/gristmill-<uid>`; private to the user."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "gristmill" if base else Path(f"/tmp/gristmill-run-{os.geteuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.geteuid() or path.stat().st_mode & 0o077:
        raise LocalServerError(f"{path} must be a directory of the user's own, mode 0700")
    return path


def _ready(address: str, timeout_s: float) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            return False
    return True


@dataclass(frozen=True)
class LocalServer:
    """The local server of one configuration: its socket, pid file, lock and log."""

    config: ServerConfig
    flags: tuple[str, ...]  # the `serve` flags that give it this configuration
    directory: Path

    @classmethod
    def of(cls, config: ServerConfig, flags: tuple[str, ...]) -> LocalServer:
        return cls(config, flags, runtime_dir())

    @property
    def name(self) -> str:
        text = f"{__version__} {Path(__file__).parent} {self.config!r}"
        return "server-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def socket(self) -> Path:
        return self.directory / f"{self.name}.sock"

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.directory / f"{self.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def running(self) -> bool:
        """Whether something listens on the socket (a plain connect: far quicker than
        a gRPC channel's handshake, which the command's own call then does)."""
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def ensure(self) -> str:
        """The server's address, started first if it is not running."""
        if self.running():
            return self.address
        with self._locked():
            if self.running():  # another command started it meanwhile
                return self.address
            self.socket.unlink(missing_ok=True)
            self._start()
        return self.address

    def _start(self) -> None:
        if missing := server_part_missing():
            raise LocalServerError(client_only(missing))
        argv = [
            sys.executable,
            "-m",
            "gristmill",
            "serve",
            "--address",
            self.address,
            "--idle-exit-s",
            str(IDLE_EXIT_S),
            *self.flags,
        ]
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C in the terminal is not meant for it
                close_fds=True,
            )
        self.pid_file.write_text(str(process.pid))
        print(
            f"gristmill: starting a local server (pid {process.pid}, log {self.log});"
            " later commands reuse it",
            file=sys.stderr,
        )
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            if process.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
                raise LocalServerError(
                    f"the local server exited with status {process.returncode}: "
                    + (" / ".join(tail) or "no output")
                )
            if self.socket.exists() and _ready(self.address, PROBE_TIMEOUT_S):
                return
            time.sleep(0.05)
        raise LocalServerError(f"the local server did not start in {START_TIMEOUT_S:.0f} s")

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.socket).encode() in cmdline

    def stop(self) -> bool:
        """Stops the server (SIGTERM to its pid), if it runs; True if one was stopped."""
        with self._locked():
            try:
                pid = int(self.pid_file.read_text())
            except (OSError, ValueError):
                return False
            self.pid_file.unlink(missing_ok=True)
            if not self._is_ours(pid):  # gone, and its pid possibly someone else's now
                self.socket.unlink(missing_ok=True)
                return False
            os.kill(pid, signal.SIGTERM)
            for _ in range(400):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # started by this very process (tests)
                if not self._is_ours(pid):
                    break
                time.sleep(0.05)
            self.socket.unlink(missing_ok=True)
            return True
