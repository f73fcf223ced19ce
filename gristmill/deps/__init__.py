"""Dependencies, for every language: resolve, lock, install once, share read-only.

    manager.DependencyManager   what the executor and the Resolve RPC call
    ├── sandboxed.ToolRunner    runs the resolver in a sandbox with network
    ├── key.EnvironmentKey      everything that decides an environment, hashed
    └── cache.EnvironmentCache  built once, renamed into place, leased, evicted LRU
                                (also keeps compiled jobs: `gristmill.jobs.build`)

Nothing here names a language: the language's plugin (`runtimes/<name>/language.py`)
finds the dependencies in the code and gives the commands that lock and install them,
by the contract of `gristmill.languages` (`resolver`: argv as data; `lockfiles`: a
lockfile given back, checked by its resolver's own rules; `errors.DependencyFailure`).
"""

from gristmill.deps.cache import EnvironmentCache, Lease
from gristmill.deps.key import EnvironmentKey
from gristmill.deps.manager import DependencyManager, PreparedEnvironment
from gristmill.languages.errors import DependencyFailure

__all__ = [
    "DependencyFailure",
    "DependencyManager",
    "EnvironmentCache",
    "EnvironmentKey",
    "Lease",
    "PreparedEnvironment",
]
