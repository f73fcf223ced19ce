"""The server's settings about who calls it and what each caller gets: authentication
(`auth.*`), tenants (`tenants.<name>.*`, `tenant_defaults.*`) and the databases jobs may
name (`databases.<name>.*`). Declared as the rest of gristmill/config.py, which holds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic.dataclasses import dataclass

from gristmill.config_schema import TABLE, ConfigError, setting
from gristmill.model import Limits

__all__ = ["ANONYMOUS", "AuthConfig", "DatabaseConfig", "TenantConfig"]

if TYPE_CHECKING:
    LimitMaxima = Mapping[str, Any]
else:
    LimitMaxima = Mapping[Literal[tuple(f.name for f in dataclasses.fields(Limits))], int | bool]
"""A tenant's `max_limits` table: a limit's name, its value."""

TENANT_FIELD = "{tenant}"
MAX_ROLE_BYTES = 63
"""PostgreSQL's longest name (NAMEDATALEN - 1); it truncates longer ones."""


@dataclass(frozen=True, config=TABLE)
class DatabaseConfig:
    """A database jobs may name (keys `databases.<name>.*`, from a file or flags only).

    Its credentials stay in the service: a job names the database, never its DSN.
    """

    kind: Literal["sqlite", "postgresql"] = setting(
        "postgresql",
        'What it is: "sqlite" (a file `path`, persistent between jobs) or "postgresql".',
    )
    dsn: str = setting(
        "", "A libpq connection string (PostgreSQL); it may hold a password: never shown."
    )
    role: str = setting(
        "",
        'The role jobs connect as (PostgreSQL); "" means the DSN\'s own user. With `{tenant}` '
        'in it (e.g. "job_{tenant}") each tenant\'s jobs connect as a role of their own, so '
        "that one tenant cannot see or cancel another's statements nor set its role's "
        "defaults for the others; without, every tenant shares the one role.",
    )
    pool_size: int = setting(4, "The most connections open to it at once; further jobs wait.", ge=1)
    path: str = setting("", "The database file (SQLite).")

    def __post_init__(self) -> None:
        rest = self.role.replace(TENANT_FIELD, "")
        if "{" in rest or "}" in rest:
            raise ConfigError(f"database role {self.role!r}: the only field is {TENANT_FIELD}")

    @property
    def per_tenant(self) -> bool:
        """Whether each tenant's jobs connect as a role of their own."""
        return TENANT_FIELD in self.role

    def shared_role_warning(self, name: str) -> str | None:
        """What a PostgreSQL database whose tenants share one role lets them do to each
        other (as PostgreSQL 15 does); None when each has its own."""
        if self.kind != "postgresql" or self.per_tenant:
            return None
        role = repr(self.role) if self.role else "its DSN's user"
        return (
            f"database {name!r}: every tenant's jobs connect as one role ({role}): a "
            "tenant can read another's running statements, literals included "
            "(pg_stat_activity), cancel them (pg_cancel_backend) and, allowed to commit, "
            "ALTER ROLE it SET defaults that every tenant's later jobs start with; "
            f'role = "<prefix>{TENANT_FIELD}" gives each tenant a role of its own'
        )

    def role_for(self, tenant: str) -> str:
        """The role a tenant's jobs connect as ("": the DSN's user). PostgreSQL cuts a
        name at 63 bytes: a longer one (two tenants could share it) is refused."""
        if not self.per_tenant:
            return self.role
        role = self.role.replace(TENANT_FIELD, tenant)
        if not tenant or "\0" in tenant or len(role.encode()) > MAX_ROLE_BYTES:
            raise ConfigError(f"tenant {tenant!r} has no role of its own ({self.role!r})")
        return role


@dataclass(frozen=True, config=TABLE)
class AuthConfig:
    """Who may call the server (keys `auth.*`; `gristmill.server.access` applies them).

    A caller is authenticated by a bearer token or a client certificate; the server
    refuses to listen on anything but loopback or a Unix socket without one of them
    (and, for tokens, without TLS, which would show them to the network) unless
    `insecure` is set.
    """

    tls_cert_file: Path | None = setting(
        None, "The server's certificate chain (PEM): TLS on the gRPC port.", flag="--tls-cert"
    )
    tls_key_file: Path | None = setting(None, "Its private key (PEM).", flag="--tls-key")
    client_ca_file: Path | None = setting(
        None,
        "CAs whose client certificates are accepted (PEM): mutual TLS, every client must "
        "show one; its common name is the caller's tenant.",
        flag="--client-ca",
    )
    tokens_file: Path | None = setting(
        None,
        "Bearer tokens, one `NAME:TOKEN` a line (`#` comments); NAME is the tenant.",
        flag="--tokens-file",
    )
    tokens: str = setting("", "The same as `NAME:TOKEN` words, for the environment.")
    insecure: bool = setting(
        False,
        "Listen on a public address without authentication (or tokens without TLS).",
        flag="--insecure",
    )

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("auth.tls_cert_file and auth.tls_key_file go together")
        if self.client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("auth.client_ca_file needs TLS: set auth.tls_cert_file and key")


ANONYMOUS = "anonymous"
"""The tenant of every call when the server authenticates no one."""


@dataclass(frozen=True, config=TABLE)
class TenantConfig:
    """One tenant's share of the server (keys `tenants.<name>.*`), so that no tenant can
    fill it for the others. A tenant is a token's name or a client certificate's common
    name; one not configured gets the defaults (`tenants.<name>` for `anonymous` too)."""

    max_concurrent_jobs: int = setting(
        0, "Its jobs running at once; 0: as many as the server runs.", ge=0
    )
    max_queued_jobs: int | None = setting(
        None, "Its jobs waiting for a slot; unset: 4 x its concurrency (or the server's).", ge=0
    )
    operator: bool = setting(
        False, "May see the server's host paths (ListRuntimes) and other operators' views."
    )
    max_limits: LimitMaxima = setting({}, "Its own maxima; a limit not given is the server's.")
