"""The server's configuration: one frozen value, read from a TOML file, the environment and flags.

Each setting has one flat key (`address`, `default_limits.wall_time_ms`, ...). A TOML file
spells it with tables (`[default_limits]` then `wall_time_ms = ...`), the environment as
`GRISTMILL_` plus the key in capitals with dots as underscores
(`GRISTMILL_DEFAULT_LIMITS_WALL_TIME_MS`), the CLI as flags; later sources win.

`max_limits.network` is the network policy: whether a job may ask for the network at all.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from gristmill.errors import GristmillError
from gristmill.isolation.egress import EgressPolicy, PolicyError, parse_entry, policy, split_list
from gristmill.model import Limits
from gristmill.resources import PROFILES_DIR, RUNTIMES_DIR

__all__ = [
    "ANONYMOUS",
    "DEFAULT_LIMITS",
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_LIMITS",
    "AuthConfig",
    "Caps",
    "ConfigError",
    "DatabaseConfig",
    "DependencyConfig",
    "NetworkConfig",
    "PoolConfig",
    "ServerConfig",
    "TelemetryConfig",
    "TenantConfig",
    "load_config",
]

MiB = 1024 * 1024
ENV_PREFIX = "GRISTMILL_"

DEFAULT_LIMITS = Limits(
    wall_time_ms=10_000,
    memory_bytes=256 * MiB,
    cpu_time_ms=10_000,
    processes=64,
    output_bytes=1 * MiB,
    network=False,
    cpu_millicores=1000,
    network_bytes=1024 * MiB,
    network_connections=1024,
)
MAX_LIMITS = Limits(
    wall_time_ms=15 * 60_000,
    memory_bytes=8 * 1024 * MiB,
    cpu_time_ms=15 * 60_000,
    processes=1024,
    output_bytes=64 * MiB,
    network=False,
    cpu_millicores=max(os.cpu_count() or 1, 1) * 1000,
    network_bytes=64 * 1024 * MiB,
    network_connections=1_000_000,
)


class ConfigError(GristmillError):
    """A setting is unknown or its value is malformed or inconsistent."""


def _default_work_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/gristmill")
    return Path(tempfile.gettempdir()) / f"gristmill-{os.geteuid()}"


def _cpu_count() -> int:
    return os.cpu_count() or 1


TENANT_FIELD = "{tenant}"
MAX_ROLE_BYTES = 63
"""PostgreSQL's longest name (NAMEDATALEN - 1); it truncates longer ones."""


@dataclass(frozen=True)
class DatabaseConfig:
    """A database jobs may name (keys `databases.<name>.*`, from a file or flags only).

    Its credentials stay in the service: a job names the database, never its DSN.
    """

    # What it is: "sqlite" (a file `path`, persistent between jobs) or "postgresql".
    kind: str = "postgresql"
    # A libpq connection string (PostgreSQL); it may hold a password: never shown.
    dsn: str = ""
    # The role jobs connect as (PostgreSQL); "" means the DSN's own user. With `{tenant}`
    # in it (e.g. "job_{tenant}") each tenant's jobs connect as a role of their own, so
    # that one tenant cannot see or cancel another's statements nor set its role's
    # defaults for the others; without, every tenant shares the one role.
    role: str = ""
    # The most connections open to it at once; further jobs wait for one.
    pool_size: int = 4
    # The database file (SQLite).
    path: str = ""

    def __post_init__(self) -> None:
        if self.kind not in {"sqlite", "postgresql"}:
            raise ConfigError(f"database kind {self.kind!r}: expected sqlite or postgresql")
        if self.pool_size < 1:
            raise ConfigError("database pool_size must be at least 1")
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


@dataclass(frozen=True)
class DependencyConfig:
    """How dependencies are resolved, installed and cached (keys `deps.*`)."""

    # Environments, build outputs and the resolvers' download caches; None means
    # <work_dir>/deps. Several servers may share one: each is still built once.
    cache_dir: Path | None = None
    # Each cache has a budget of its own; the disk they need is the sum. Past it,
    # environments (or build outputs) no job is using go, least recently used first;
    # a resolver's download cache is emptied when no resolve or install is using it.
    cache_max_bytes: int = 10 * 1024 * MiB
    build_cache_max_bytes: int = 2 * 1024 * MiB
    tool_cache_max_bytes: int = 2 * 1024 * MiB
    # A registry to use instead of each resolver's default (e.g. a PyPI mirror).
    index_url: str = ""
    # Let the resolver build packages that have no wheel from source. Their build code
    # then runs in the resolve sandbox with the download cache writable: each tenant
    # then has its own download cache, environments and resolutions, so a package can
    # rewrite only what its own tenant's jobs install (and a tenant builds its own).
    allow_source_builds: bool = False
    # Trust the system's CA store (/etc/ssl/certs) rather than the resolver's own.
    system_certs: bool = True
    # Run the languages' build prime steps (`[build] prime`, e.g. a compiler's cache of
    # its standard library) when the server starts, before it serves: the first compiled
    # job then does not wait minutes for one. Off: the first build of a language primes.
    prime_at_start: bool = False
    # How long a resolution is reused for the same requirements (0: resolve every time).
    # A package released meanwhile is picked up once it expires.
    resolution_ttl_s: float = 3600.0
    # What resolve and install steps may connect to (comma-separated host names or
    # networks, each with an optional port): the registries, and `index_url`'s host.
    registries: str = (
        "pypi.org:443,files.pythonhosted.org:443,registry.npmjs.org:443,"
        "proxy.golang.org:443,sum.golang.org:443,storage.googleapis.com:443,"
        "repo.maven.apache.org:443,repo1.maven.org:443,api.nuget.org:443"
    )
    # Limits of each resolve or install run: its own, never a job's.
    wall_time_ms: int = 600_000
    cpu_time_ms: int = 600_000
    memory_bytes: int = 2048 * MiB
    processes: int = 256

    def __post_init__(self) -> None:
        for entry in split_list(self.registries):
            try:
                parse_entry(entry)
            except PolicyError as error:
                raise ConfigError(f"deps.registries: {error}") from error

    def egress(self) -> EgressPolicy:
        """Where a resolve or install step may connect: the registries only. (Resolves
        their names: call it off the event loop.)"""
        entries = list(split_list(self.registries))
        if self.index_url:
            index = urlsplit(self.index_url)
            port = index.port or (80 if index.scheme == "http" else 443)
            if index.hostname:
                entries.append(f"{index.hostname}:{port}")
        return policy(entries)

    def limits(self) -> Limits:
        """The sandbox limits of one resolve or install run; it always has the network."""
        return Limits(
            wall_time_ms=self.wall_time_ms,
            memory_bytes=self.memory_bytes,
            cpu_time_ms=self.cpu_time_ms,
            processes=self.processes,
            output_bytes=MiB,
            network=True,
        )


@dataclass(frozen=True)
class NetworkConfig:
    """Where network-on jobs may connect (keys `network.*`); see `isolation/egress.py`.

    Every such job has a network namespace of its own; the host itself (its addresses,
    its networks, its loopback) is never reachable, and DNS goes through the policy's
    resolver only.
    """

    # Comma-separated networks or host names, each with an optional port
    # ("203.0.113.0/24, api.example.com:443"). Empty: anywhere except loopback,
    # link-local (the cloud metadata address), private ranges, CGNAT, multicast and
    # IPv6 ULA. Non-empty: only these, private ones included.
    allow: str = ""
    # Whether jobs may look names up (through the policy's resolver only). Off: only the
    # host names of the allow lists resolve (pinned in /etc/hosts), and no DNS query
    # can carry data out through the host's resolver.
    dns: bool = True

    def __post_init__(self) -> None:
        for entry in split_list(self.allow):
            try:
                parse_entry(entry)
            except PolicyError as error:
                raise ConfigError(f"network.allow: {error}") from error

    def egress(self, narrowed_to: tuple[str, ...] = ()) -> EgressPolicy:
        """A job's policy: the server's, narrowed by the request's own allow list. (Resolves
        host names: call it off the event loop.)"""
        server = dataclasses.replace(policy(split_list(self.allow)), dns=self.dns)
        if not narrowed_to:
            return server
        request = policy(narrowed_to)
        return server.narrowed(request.gates[0], request.hosts)


@dataclass(frozen=True)
class Caps:
    """What one request or result may hold (keys `caps.*`).

    The service's own work on a job (checking its request, inferring its dependencies,
    writing its files, reading its result) grows with these sizes; past them a request
    is refused with INVALID_ARGUMENT naming the field, and a result stops the job with
    OUTPUT_LIMIT, so that no one job can stall or bloat the service for the others.
    """

    code_bytes: int = 1 * MiB
    args_bytes: int = 16 * MiB
    files: int = 1000
    files_bytes: int = 64 * MiB
    result_bytes: int = 16 * MiB
    stdin_bytes: int = 16 * MiB
    # Files a job's outcome brings back (`Job.output_files`): past either bound, the job
    # is OUTPUT_LIMIT.
    output_files: int = 100
    output_files_bytes: int = 16 * MiB
    # Finished outcomes (and their jobs) kept for retries under their id, in bytes;
    # past it the oldest are forgotten before their `recent_jobs_ttl_s` is up.
    recent_jobs_bytes: int = 256 * MiB


@dataclass(frozen=True)
class PoolConfig:
    """Warm sandboxes (keys `pool.*`): started ahead of demand, one job each.

    Kept per language and per environment and build its jobs mount (`jobs.pool.Kind`):
    from a kind's first job on, enough to cover its recent arrival rate while a new one
    starts, at most `per_language` of a kind, within `max_sandboxes` and
    `max_memory_bytes` (what waiting sandboxes hold) in all; after `idle_s` without a
    job of its kind a warm sandbox is stopped. Network-on jobs are a kind of their own. A
    job that none fits (its own environment variables, its own network allow list or
    connections cap, limits past the pool's) starts cold.
    """

    enabled: bool = True
    per_language: int = 4
    max_sandboxes: int = 16
    max_memory_bytes: int = 512 * MiB
    idle_s: float = 60.0
    # Python jobs' interpreters forked from a template (one per interpreter command, its
    # imports done, no job's data in it), each child then entering a fresh sandbox of its
    # own, instead of started per job. Process backend only (nsjail builds its jail by its
    # own exec); network-on jobs are always started.
    fork_interpreters: bool = False


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "console", "json", "logfmt")


@dataclass(frozen=True)
class TelemetryConfig:
    """Logs, metrics and traces (keys `telemetry.*`; see gristmill/observability/)."""

    # The least severe log records written: DEBUG, INFO (one line per job), WARNING, ERROR.
    log_level: str = "INFO"
    # "json" or "logfmt" (one record per line, for collectors), "console" (for people),
    # or "auto": console on a terminal, else json.
    log_format: str = "auto"
    # HOST:PORT of the Prometheus endpoint (`/metrics`, a port of its own); "": none,
    # and jobs are not counted.
    metrics_address: str = ""
    # The OTLP/gRPC collector traces are exported to (e.g. http://127.0.0.1:4317);
    # "": no tracing at all.
    otlp_endpoint: str = ""
    # The `service.name` of the traces.
    service_name: str = "gristmill"

    def __post_init__(self) -> None:
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"telemetry.log_level {self.log_level!r}: expected one of {LOG_LEVELS}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"telemetry.log_format {self.log_format!r}: expected one of {LOG_FORMATS}"
            )


@dataclass(frozen=True)
class AuthConfig:
    """Who may call the server (keys `auth.*`; `gristmill.server.access` applies them).

    A caller is authenticated by a bearer token or a client certificate; the server
    refuses to listen on anything but loopback or a Unix socket without one of them
    (and, for tokens, without TLS, which would show them to the network) unless
    `insecure` is set.
    """

    # The server's certificate chain and key (PEM): TLS on the gRPC port.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # CAs whose client certificates are accepted (PEM): mutual TLS, every client must
    # show one; its common name is the caller's tenant.
    client_ca_file: Path | None = None
    # Bearer tokens, one `NAME:TOKEN` a line (`#` comments); NAME is the tenant.
    tokens_file: Path | None = None
    # The same as `NAME:TOKEN` words, for the environment (GRISTMILL_AUTH_TOKENS).
    tokens: str = ""
    # Listen on a public address without authentication (or tokens without TLS).
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("auth.tls_cert_file and auth.tls_key_file go together")
        if self.client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("auth.client_ca_file needs TLS: set auth.tls_cert_file and key")


ANONYMOUS = "anonymous"
"""The tenant of every call when the server authenticates no one."""


@dataclass(frozen=True)
class TenantConfig:
    """One tenant's share of the server (keys `tenants.<name>.*`), so that no tenant can
    fill it for the others. A tenant is a token's name or a client certificate's common
    name; one not configured gets the defaults (`tenants.<name>` for `anonymous` too)."""

    # Its jobs running at once; 0: as many as the server runs.
    max_concurrent_jobs: int = 0
    # Its jobs waiting for a slot; None: 4 x its concurrency (or the server's queue).
    max_queued_jobs: int | None = None
    # May see the server's host paths (ListRuntimes) and other operators' views.
    operator: bool = False
    # Its own maxima (`tenants.<name>.max_limits.*`); a limit not given is the server's.
    max_limits: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_concurrent_jobs < 0 or (self.max_queued_jobs or 0) < 0:
            raise ConfigError("a tenant's max_concurrent_jobs and max_queued_jobs are >= 0")
        unknown = set(self.max_limits) - {limit.name for limit in dataclasses.fields(Limits)}
        if unknown:
            raise ConfigError(f"unknown tenant max_limits: {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class ServerConfig:
    # Where the gRPC server listens: HOST:PORT, or unix:PATH.
    address: str = "127.0.0.1:50051"
    # Jobs running at once (default: the number of CPUs).
    max_concurrent_jobs: int = field(default_factory=_cpu_count)
    # Jobs waiting for a slot beyond those running; None means 4 x max_concurrent_jobs.
    max_queued_jobs: int | None = None
    # A job's limits where its request gives none (a limit of 0 asks for the default).
    default_limits: Limits = DEFAULT_LIMITS
    # A request over any of these is refused, never clipped; `network` is the policy.
    max_limits: Limits = MAX_LIMITS
    # A backend name ("process", "nsjail"); None picks the best this machine supports.
    sandbox_backend: str | None = None
    # Job directories and caches; /var/lib/gristmill as root, else a folder in $TMPDIR.
    work_dir: Path = field(default_factory=_default_work_dir)
    # How long a finished job's outcome is kept for requests repeating its id.
    recent_jobs_ttl_s: float = 600.0
    # The languages (runtimes/) and their sandbox profiles (sandbox/profiles/): the
    # checkout's, or the installed package's copies (gristmill.resources).
    runtimes_dir: Path = RUNTIMES_DIR
    profiles_dir: Path = PROFILES_DIR
    deps: DependencyConfig = DependencyConfig()
    caps: Caps = Caps()
    pool: PoolConfig = PoolConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    network: NetworkConfig = NetworkConfig()
    # Databases by name, for languages whose jobs use one (`databases.<name>.*`).
    databases: Mapping[str, DatabaseConfig] = field(default_factory=dict)
    auth: AuthConfig = AuthConfig()
    # Tenants by name (`tenants.<name>.*`): quotas, maxima, operator.
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
    # The share of every tenant without a `tenants.<name>` table of its own
    # (`tenant_defaults.*`): e.g. max_concurrent_jobs = 2, so that no tenant fills it.
    tenant_defaults: TenantConfig = TenantConfig()
    # On SIGTERM, how long running and queued jobs may take to finish before the rest
    # are cancelled (long enough for the default wall time, and some queueing).
    drain_grace_s: float = 30.0

    @property
    def deps_dir(self) -> Path:
        return self.deps.cache_dir or self.work_dir / "deps"

    @property
    def pool_limits(self) -> Limits:
        """What warm sandboxes wait under: the default memory (a job with it may take a
        sandbox whose program sized itself to it) and the maximum times and processes; a
        job's own limits replace them at its hand-over."""
        return dataclasses.replace(
            self.default_limits,
            wall_time_ms=self.max_limits.wall_time_ms,
            cpu_time_ms=self.max_limits.cpu_time_ms,
            processes=self.max_limits.processes,
        )

    def __post_init__(self) -> None:
        if self.max_concurrent_jobs < 1:
            raise ConfigError("max_concurrent_jobs must be at least 1")
        if self.queue_capacity < 0:
            raise ConfigError("max_queued_jobs must not be negative")
        if self.recent_jobs_ttl_s < 0:
            raise ConfigError("recent_jobs_ttl_s must not be negative")
        if self.drain_grace_s < 0:
            raise ConfigError("drain_grace_s must not be negative")
        for cap in dataclasses.fields(Caps):
            if getattr(self.caps, cap.name) < 1:
                raise ConfigError(f"caps.{cap.name} must be at least 1")
        for limit in dataclasses.fields(Limits):
            default = getattr(self.default_limits, limit.name)
            maximum = getattr(self.max_limits, limit.name)
            if default > maximum:
                raise ConfigError(
                    f"default_limits.{limit.name} ({default}) is over max_limits.{limit.name}"
                    f" ({maximum})"
                )

    @property
    def queue_capacity(self) -> int:
        if self.max_queued_jobs is None:
            return 4 * self.max_concurrent_jobs
        return self.max_queued_jobs

    @property
    def allow_network(self) -> bool:
        return self.max_limits.network


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


# Each flat key and its type.
_TYPES: dict[str, type] = {
    "address": str,
    "max_concurrent_jobs": int,
    "max_queued_jobs": int,
    "sandbox_backend": str,
    "work_dir": Path,
    "recent_jobs_ttl_s": float,
    "runtimes_dir": Path,
    "profiles_dir": Path,
    "drain_grace_s": float,
}
_TYPES.update({f"deps.{name}": kind for name, kind in get_type_hints(DependencyConfig).items()})
_TYPES.update({f"caps.{name}": kind for name, kind in get_type_hints(Caps).items()})
_TYPES.update({f"pool.{name}": kind for name, kind in get_type_hints(PoolConfig).items()})
_TYPES.update({f"telemetry.{name}": kind for name, kind in get_type_hints(TelemetryConfig).items()})
_TYPES.update({f"network.{name}": kind for name, kind in get_type_hints(NetworkConfig).items()})
_TYPES["deps.cache_dir"] = Path  # optional: "" means the default
_AUTH_FILES = ("tls_cert_file", "tls_key_file", "client_ca_file", "tokens_file")
_TYPES.update({f"auth.{name}": Path for name in _AUTH_FILES})
_TYPES.update({"auth.tokens": str, "auth.insecure": bool})
# Settings whose empty text means None ("pick automatically").
_OPTIONAL = {"sandbox_backend", "max_queued_jobs", "deps.cache_dir"}
_OPTIONAL |= {f"auth.{name}" for name in _AUTH_FILES}
_LIMIT_TABLES = {"default_limits": DEFAULT_LIMITS, "max_limits": MAX_LIMITS}
_TYPES.update(
    {
        f"{table}.{limit.name}": type(getattr(DEFAULT_LIMITS, limit.name))
        for table in _LIMIT_TABLES
        for limit in dataclasses.fields(Limits)
    }
)


def _parse(kind: type, text: str) -> Any:
    if kind is bool:
        return _parse_bool(text)
    return kind(text)


_DATABASE_TYPES = get_type_hints(DatabaseConfig)


_TENANT_TYPES: dict[str, type] = {
    "max_concurrent_jobs": int,
    "max_queued_jobs": int,
    "operator": bool,
}
_TYPES.update({f"tenant_defaults.{name}": kind for name, kind in _TENANT_TYPES.items()})
_TYPES.update(
    {
        f"tenant_defaults.max_limits.{limit.name}": type(getattr(DEFAULT_LIMITS, limit.name))
        for limit in dataclasses.fields(Limits)
    }
)


def _kind_of(key: str) -> type | None:
    """The type of setting `key`; `databases.<name>.<field>` and `tenants.<name>.<field>`
    names are the operator's."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "databases" and parts[1]:
        return _DATABASE_TYPES.get(parts[2])
    if len(parts) == 3 and parts[0] == "tenants" and parts[1]:
        return _TENANT_TYPES.get(parts[2])
    if len(parts) == 4 and parts[0] == "tenants" and parts[1] and parts[2] == "max_limits":
        return _TYPES.get(f"max_limits.{parts[3]}")
    return _TYPES.get(key)


def _coerce(key: str, value: Any, origin: str) -> Any:
    """`value` as the type of setting `key`: text is parsed, typed values are checked."""
    kind = _kind_of(key)
    if kind is None:
        raise ConfigError(f"{origin}: unknown setting {key!r}")
    try:
        if isinstance(value, str):
            return None if not value and key in _OPTIONAL else _parse(kind, value)
        if kind is float and type(value) is int:
            return float(value)
        # bool is an int to Python, never to a setting.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(f"expected {kind.__name__}, got {value!r}")
        return value
    except ValueError as error:
        raise ConfigError(f"{origin}: {key}: {error}") from error


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    return {key: _coerce(key, value, str(path)) for key, value in _flatten(data).items()}


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    return {
        key: _coerce(key, environ[_env_name(key)], _env_name(key))
        for key in _TYPES
        if _env_name(key) in environ
    }


def load_config(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """The configuration from defaults, then `config_file`, then `environ`, then `overrides`.

    `overrides` holds flat keys (e.g. from CLI flags); a None value means "not given".
    `config_file` defaults to `$GRISTMILL_CONFIG` when that is set.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(f"{ENV_PREFIX}CONFIG"):
        config_file = Path(environ[f"{ENV_PREFIX}CONFIG"])
    settings: dict[str, Any] = {}
    if config_file is not None:
        settings.update(_from_toml(config_file))
    settings.update(_from_env(environ))
    settings.update(
        {
            key: _coerce(key, value, "flag")
            for key, value in (overrides or {}).items()
            if value is not None
        }
    )
    return _build(settings)


def _table(settings: Mapping[str, Any], table: str) -> dict[str, Any]:
    """The settings `<table>.<name>` of one table, by name."""
    prefix = f"{table}."
    return {key[len(prefix) :]: value for key, value in settings.items() if key.startswith(prefix)}


def _build(settings: Mapping[str, Any]) -> ServerConfig:
    scalars: dict[str, Any] = {key: value for key, value in settings.items() if "." not in key}
    named = _table(settings, "databases")
    databases = {
        name: DatabaseConfig(**_table(named, name))
        for name in dict.fromkeys(key.split(".")[0] for key in named)
    }
    limits: dict[str, Any] = {
        table: dataclasses.replace(defaults, **_table(settings, table))
        for table, defaults in _LIMIT_TABLES.items()
    }
    deps = DependencyConfig(**_table(settings, "deps"))
    caps = Caps(**_table(settings, "caps"))
    pool = PoolConfig(**_table(settings, "pool"))
    telemetry = TelemetryConfig(**_table(settings, "telemetry"))
    auth = AuthConfig(**_table(settings, "auth"))
    network = NetworkConfig(**_table(settings, "network"))
    return ServerConfig(
        **scalars,
        **limits,
        deps=deps,
        caps=caps,
        pool=pool,
        telemetry=telemetry,
        network=network,
        databases=databases,
        auth=auth,
        tenants=_tenants(_table(settings, "tenants")),
        tenant_defaults=_tenant(_table(settings, "tenant_defaults")),
    )


def _tenant(own: Mapping[str, Any]) -> TenantConfig:
    return TenantConfig(
        **{key: value for key, value in own.items() if "." not in key},
        max_limits=_table(own, "max_limits"),
    )


def _tenants(named: Mapping[str, Any]) -> dict[str, TenantConfig]:
    names = dict.fromkeys(key.split(".")[0] for key in named)
    return {name: _tenant(_table(named, name)) for name in names}
