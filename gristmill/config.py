"""The server's configuration: one frozen value, read from a TOML file, the environment and flags.

Each setting is declared once, below, as a field with its type, default, bounds and
description (`setting`); its TOML key, environment variable, flag, validation and
reference entry all come from that declaration (gristmill/config_schema.py); the tables
of access, tenants and databases are declared in gristmill/config_access.py. A setting
has one flat key (`address`, `default_limits.wall_time_ms`, ...): a TOML file spells it
with tables (`[default_limits]` then `wall_time_ms = ...`), the environment as
`GRISTMILL_` plus the key in capitals with dots as underscores
(`GRISTMILL_DEFAULT_LIMITS_WALL_TIME_MS`), the CLI as flags; later sources win.

`max_limits.network` is the network policy: whether a job may ask for the network at all.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator
from pydantic.dataclasses import dataclass

from gristmill.config_access import ANONYMOUS, AuthConfig, DatabaseConfig, TenantConfig
from gristmill.config_schema import ENV_PREFIX, TABLE, ConfigError, load, setting
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
    "BackendName",
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

BackendName = Literal["process", "nsjail"]
"""The sandbox backends `sandbox_backend` may name (gristmill.isolation.select has them)."""

MiB = 1024 * 1024

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


def _default_work_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/gristmill")
    return Path(tempfile.gettempdir()) / f"gristmill-{os.geteuid()}"


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _check_entries(key: str, entries: str) -> None:
    for entry in split_list(entries):
        try:
            parse_entry(entry)
        except PolicyError as error:
            raise ConfigError(f"{key}: {error}") from error


_CACHE_BUDGET = (
    "Each cache has a budget of its own; the disk they need is the sum. Past it, "
    "environments (or build outputs) no job is using go, least recently used first; a "
    "resolver's download cache is emptied when no resolve or install is using it."
)
_STEP_LIMITS = "Limits of each resolve or install run: its own, never a job's."


@dataclass(frozen=True, config=TABLE)
class DependencyConfig:
    """How dependencies are resolved, installed and cached (keys `deps.*`)."""

    cache_dir: Path | None = setting(
        None,
        "Environments, build outputs and the resolvers' download caches; unset means "
        "<work_dir>/deps. Several servers may share one: each is still built once.",
    )
    cache_max_bytes: int = setting(10 * 1024 * MiB, _CACHE_BUDGET, ge=1)
    build_cache_max_bytes: int = setting(2 * 1024 * MiB, _CACHE_BUDGET, ge=1)
    tool_cache_max_bytes: int = setting(2 * 1024 * MiB, _CACHE_BUDGET, ge=1)
    index_url: str = setting("", "A registry to use instead of each resolver's default.")
    allow_source_builds: bool = setting(
        False,
        "Let the resolver build packages that have no wheel from source. Their build code "
        "then runs in the resolve sandbox with the download cache writable: each tenant "
        "then has its own download cache, environments and resolutions, so a package can "
        "rewrite only what its own tenant's jobs install (and a tenant builds its own).",
    )
    system_certs: bool = setting(
        True, "Trust the system's CA store (/etc/ssl/certs) rather than the resolver's own."
    )
    prime_at_start: bool = setting(
        False,
        "Run the languages' build prime steps (`[build] prime`, e.g. a compiler's cache of "
        "its standard library) when the server starts, before it serves: the first compiled "
        "job then does not wait minutes for one. Off: the first build of a language primes.",
    )
    resolution_ttl_s: float = setting(
        3600.0,
        "How long a resolution is reused for the same requirements (0: resolve every time). "
        "A package released meanwhile is picked up once it expires.",
        ge=0,
    )
    registries: str = setting(
        "pypi.org:443,files.pythonhosted.org:443,registry.npmjs.org:443,"
        "proxy.golang.org:443,sum.golang.org:443,storage.googleapis.com:443,"
        "repo.maven.apache.org:443,repo1.maven.org:443,api.nuget.org:443",
        "What resolve and install steps may connect to (comma-separated host names or "
        "networks, each with an optional port): the registries, and `index_url`'s host.",
    )
    wall_time_ms: int = setting(600_000, _STEP_LIMITS, ge=1)
    cpu_time_ms: int = setting(600_000, _STEP_LIMITS, ge=1)
    memory_bytes: int = setting(2048 * MiB, _STEP_LIMITS, ge=1)
    processes: int = setting(256, _STEP_LIMITS, ge=1)

    def __post_init__(self) -> None:
        _check_entries("deps.registries", self.registries)

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


@dataclass(frozen=True, config=TABLE)
class NetworkConfig:
    """Where network-on jobs may connect (keys `network.*`); see `isolation/egress.py`.

    Every such job has a network namespace of its own; the host itself (its addresses,
    its networks, its loopback) is never reachable, and DNS goes through the policy's
    resolver only.
    """

    allow: str = setting(
        "",
        'Comma-separated networks or host names, each with an optional port ("203.0.113.0/24, '
        'api.example.com:443"). Empty: anywhere except loopback, link-local (the cloud '
        "metadata address), private ranges, CGNAT, multicast and IPv6 ULA. Non-empty: only "
        "these, private ones included.",
    )
    dns: bool = setting(
        True,
        "Whether jobs may look names up (through the policy's resolver only). Off: only the "
        "host names of the allow lists resolve (pinned in /etc/hosts), and no DNS query can "
        "carry data out through the host's resolver.",
    )

    def __post_init__(self) -> None:
        _check_entries("network.allow", self.allow)

    def egress(self, narrowed_to: tuple[str, ...] = ()) -> EgressPolicy:
        """A job's policy: the server's, narrowed by the request's own allow list. (Resolves
        host names: call it off the event loop.)"""
        server = dataclasses.replace(policy(split_list(self.allow)), dns=self.dns)
        if not narrowed_to:
            return server
        request = policy(narrowed_to)
        return server.narrowed(request.gates[0], request.hosts)


_CAP = (
    "What one request or result may hold; past it a request is refused with "
    "INVALID_ARGUMENT naming the field, and a result stops the job with OUTPUT_LIMIT."
)
_OUTPUT_FILES = "Files a job's outcome brings back (`Job.output_files`): past either, OUTPUT_LIMIT."


@dataclass(frozen=True, config=TABLE)
class Caps:
    """What one request or result may hold (keys `caps.*`).

    The service's own work on a job (checking its request, inferring its dependencies,
    writing its files, reading its result) grows with these sizes; past them a request
    is refused with INVALID_ARGUMENT naming the field, and a result stops the job with
    OUTPUT_LIMIT, so that no one job can stall or bloat the service for the others.
    """

    code_bytes: int = setting(1 * MiB, _CAP, ge=1)
    args_bytes: int = setting(16 * MiB, _CAP, ge=1)
    files: int = setting(1000, _CAP, ge=1)
    files_bytes: int = setting(64 * MiB, _CAP, ge=1)
    result_bytes: int = setting(16 * MiB, _CAP, ge=1)
    stdin_bytes: int = setting(16 * MiB, _CAP, ge=1)
    output_files: int = setting(100, _OUTPUT_FILES, ge=1)
    output_files_bytes: int = setting(16 * MiB, _OUTPUT_FILES, ge=1)
    recent_jobs_bytes: int = setting(
        256 * MiB,
        "Finished outcomes (and their jobs) kept for retries under their id, in bytes; past "
        "it the oldest are forgotten before their `recent_jobs_ttl_s` is up.",
        ge=1,
    )


@dataclass(frozen=True, config=TABLE)
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

    enabled: bool = setting(True, "Keep warm sandboxes at all.")
    per_language: int = setting(4, "The most warm sandboxes of one kind.", ge=0)
    max_sandboxes: int = setting(16, "The most warm sandboxes in all.", ge=0)
    max_memory_bytes: int = setting(512 * MiB, "What waiting sandboxes may hold in all.", ge=0)
    idle_s: float = setting(60.0, "A kind's warm sandboxes stop after this long unused.", ge=0)
    fork_interpreters: bool = setting(
        False,
        "Python jobs' interpreters forked from a template (one per interpreter command, its "
        "imports done, no job's data in it), each child then entering a fresh sandbox of its "
        "own, instead of started per job. Process backend only (nsjail builds its jail by "
        "its own exec); network-on jobs are always started.",
    )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "console", "json", "logfmt")
LogLevel = Annotated[
    Literal[LOG_LEVELS],  # type: ignore[valid-type]
    BeforeValidator(lambda level: level.upper() if isinstance(level, str) else level),
]


@dataclass(frozen=True, config=TABLE)
class TelemetryConfig:
    """Logs, metrics and traces (keys `telemetry.*`; see gristmill/observability/)."""

    log_level: LogLevel = setting(
        "INFO",
        "The least severe log records written: DEBUG, INFO (one line per job), WARNING, ERROR.",
        flag="--log-level",
    )
    log_format: Literal[LOG_FORMATS] = setting(  # type: ignore[valid-type]
        "auto",
        '"json" or "logfmt" (one record per line, for collectors), "console" (for people), '
        'or "auto": console on a terminal, else json.',
        flag="--log-format",
    )
    metrics_address: str = setting(
        "",
        'HOST:PORT of the Prometheus endpoint (`/metrics`, a port of its own); "": none, '
        "and jobs are not counted.",
        flag="--metrics-address",
    )
    otlp_endpoint: str = setting(
        "",
        'The OTLP/gRPC collector traces are exported to (e.g. http://127.0.0.1:4317); "": '
        "no tracing at all.",
        flag="--otlp-endpoint",
    )
    service_name: str = setting("gristmill", "The `service.name` of the traces.")


@dataclass(frozen=True, config=TABLE)
class ServerConfig:
    """The server's settings: every table above, and those of the server as a whole."""

    address: str = setting(
        "127.0.0.1:50051",
        "Where the gRPC server listens: HOST:PORT, or unix:PATH.",
        flag="--address",
    )
    max_concurrent_jobs: int = setting(
        _cpu_count, "Jobs running at once (default: the number of CPUs).", ge=1,
        flag="--concurrency",
    )  # fmt: skip
    max_queued_jobs: int | None = setting(
        None, "Jobs waiting for a slot beyond those running; unset: 4 x max_concurrent_jobs.",
        ge=0, flag="--queue",
    )  # fmt: skip
    default_limits: Limits = setting(
        DEFAULT_LIMITS,
        "A job's limits where its request gives none (a limit of 0 asks for the default).",
        each_ge=0,
        flags={
            "wall_time_ms": "--default-timeout-ms",
            "memory_bytes": "--default-memory-bytes",
        },
    )
    max_limits: Limits = setting(
        MAX_LIMITS,
        "A request over any of these is refused, never clipped; `network` is the policy.",
        each_ge=0,
        flags={
            "wall_time_ms": "--max-timeout-ms",
            "memory_bytes": "--max-memory-bytes",
            "processes": "--max-processes",
            "output_bytes": "--max-output-bytes",
            "network": "--allow-network",
        },
    )
    sandbox_backend: BackendName | None = setting(
        None, "A backend name; unset picks the best this machine supports.", flag="--sandbox"
    )
    work_dir: Path = setting(
        _default_work_dir,
        "Job directories and caches; /var/lib/gristmill as root, else a folder in $TMPDIR.",
        flag="--work-dir",
    )
    recent_jobs_ttl_s: float = setting(
        600.0, "How long a finished job's outcome is kept for requests repeating its id.", ge=0
    )
    runtimes_dir: Path = setting(
        RUNTIMES_DIR, "The languages (runtimes/): the checkout's or the package's."
    )
    profiles_dir: Path = setting(PROFILES_DIR, "Their sandbox profiles (sandbox/profiles/).")
    deps: DependencyConfig = DependencyConfig()
    caps: Caps = Caps()
    pool: PoolConfig = PoolConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    network: NetworkConfig = NetworkConfig()
    databases: Mapping[str, DatabaseConfig] = setting(
        {}, "Databases by name, for languages whose jobs use one."
    )
    auth: AuthConfig = AuthConfig()
    tenants: Mapping[str, TenantConfig] = setting({}, "Tenants by name: quotas, maxima, operator.")
    tenant_defaults: TenantConfig = setting(
        TenantConfig(),
        "The share of every tenant without a `tenants.<name>` table of its own: e.g. "
        "max_concurrent_jobs = 2, so that no tenant fills it.",
    )
    drain_grace_s: float = setting(
        30.0,
        "On SIGTERM, how long running and queued jobs may take to finish before the rest "
        "are cancelled (long enough for the default wall time, and some queueing).",
        ge=0,
        flag="--drain-grace-s",
    )

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
    config: ServerConfig = load(ServerConfig, ConfigError, config_file, environ, overrides or {})
    return config
