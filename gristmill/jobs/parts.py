"""The executor's parts, built once and handed in: the composition root of a job's run.

`compose` makes the work directory ready, then builds what the executor runs jobs
with: the dependency manager with its environment cache, the build cache and builds,
and the warm pool, which is handed those two caches. The server (`server/app.py`)
passes its own `Offload`, so one pool of worker processes serves the whole server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gristmill.config import (
    DEFAULT_LIMITS,
    Caps,
    DatabaseConfig,
    DependencyConfig,
    NetworkConfig,
    PoolConfig,
)
from gristmill.deps import DependencyManager, EnvironmentCache
from gristmill.errors import SandboxFailure
from gristmill.isolation.backend import SandboxBackend
from gristmill.jobs.build import Builds
from gristmill.jobs.pool import WarmPool
from gristmill.jobs.workspace import copy_runtimes, mount_jobs_dir, remove_stale
from gristmill.languages import Registry
from gristmill.model import Limits
from gristmill.offload import Offload

__all__ = ["Parts", "compose"]


@dataclass(frozen=True)
class Parts:
    """What the executor runs jobs with; it owns them from its start to its `close`."""

    registry: Registry
    backend: SandboxBackend
    work_dir: Path
    # This server's own copy of each language's folder (`copy_runtimes`).
    runtime_dirs: Path
    offload: Offload
    deps: DependencyManager
    builds: Builds
    pool: WarmPool
    caps: Caps
    network: NetworkConfig

    @property
    def jobs_dir(self) -> Path:
        return self.work_dir / "jobs"


def compose(
    registry: Registry,
    backend: SandboxBackend,
    work_dir: Path,
    deps_config: DependencyConfig | None = None,
    caps: Caps | None = None,
    pool: PoolConfig | None = None,
    pool_limits: Limits = DEFAULT_LIMITS,
    databases: Mapping[str, DatabaseConfig] | None = None,
    network: NetworkConfig | None = None,
    offload: Offload | None = None,
) -> Parts:
    """The parts for these settings; `offload` is the server's, else one of their own."""
    for runtime in registry:
        runtime.plugin.configure(databases or {})
    network = network or NetworkConfig()
    # The service's own work that grows with a job's input or output goes here.
    offload = offload or Offload(registry.runtimes_dir, registry.profiles_dir)
    runtime_dirs = _prepare_dirs(work_dir, registry)
    deps = DependencyManager(backend, work_dir, deps_config or DependencyConfig(), offload)
    # Build outputs are kept like environments, beside them, under a budget of their own.
    builds_cache = EnvironmentCache(
        deps.root / "builds", deps.config.build_cache_max_bytes, "deps.build_cache_max_bytes"
    )
    builds = Builds(backend, builds_cache, work_dir, runtime_dirs)
    warm_pool = WarmPool(
        backend,
        work_dir / "jobs",
        runtime_dirs,
        pool or PoolConfig(enabled=False),
        pool_limits,
        environments=deps.cache,
        builds=builds_cache,
        network=network,
    )
    return Parts(
        registry,
        backend,
        work_dir,
        runtime_dirs,
        offload,
        deps,
        builds,
        warm_pool,
        caps or Caps(),
        network,
    )


def _prepare_dirs(work_dir: Path, registry: Registry) -> Path:
    """Makes the work directory reachable by the jail's unprivileged uid; where this
    server's copy of the language folders is (`copy_runtimes`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o755)
    for parent in work_dir.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise SandboxFailure(
                f"work dir {work_dir}: {parent} is not searchable by other users, "
                "so the jail's unprivileged user could not reach its job directory"
            )
    jobs_dir = work_dir / "jobs"
    mount_jobs_dir(jobs_dir)
    remove_stale(jobs_dir)
    return copy_runtimes(
        {runtime.name: runtime.spec.folder for runtime in registry}, work_dir / "runtimes"
    )
