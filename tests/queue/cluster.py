"""A throwaway PostgreSQL cluster for the queue's tests: its own temp dir, socket and port.

Started with Debian's server binaries (`/usr/lib/postgresql/<newest>/bin`), as the
`postgres` user when the tests run as root (PostgreSQL refuses root). Unix socket only;
durability off. `restart` stops and starts the same cluster (the fault test uses it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresCluster", "find_pg_bin"]


def find_pg_bin() -> Path | None:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name.split(".")[0])
    )
    found = [path for path in candidates if (path / "pg_ctl").exists()]
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    def __init__(self, pg_bin: Path) -> None:
        self.pg_bin = pg_bin
        self.base = Path(tempfile.mkdtemp(prefix="gm-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._owner = pwd.getpwnam("postgres")
            os.chown(self.base, self._owner.pw_uid, self._owner.pw_gid)
        self.base.chmod(0o755)

    @property
    def conninfo(self) -> str:
        return f"host={self.base} port={self.port} user=postgres dbname=postgres"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._owner else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.pg_bin / "initdb"),
                "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            )  # fmt: skip
        options = (
            f"-c listen_addresses='' -c port={self.port} -c unix_socket_directories='{self.base}'"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=100 -c shared_buffers=32MB"
        )
        self._run(
            str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"),
            "-w", "-t", "60", "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.pg_bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
