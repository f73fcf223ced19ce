"""The language seam, and the one API a language's plugin imports from.

The core never names a language. A language folder of `runtimes/` holds `runtime.toml`
(what to run, which files, which conventions), its wrapper as a real source file in
that language, an `example` job, and optionally `language.py`, a `LanguagePlugin`
subclass named `Plugin` for what only Python code can say about it (parsing
parameters, encoding arguments, its resolver). `runtimes/_template/` is the minimum.

What a plugin may use is exported here, and nothing under `runtimes/` imports any
other module of the service (tests/languages/test_plugin_api.py holds them to it):

    LanguagePlugin, ArgumentsRejected      the plugin base, and the job's arguments refused
    Job, Dependency, DependencySource,     what a plugin is handed and returns
      Lockfile
    Resolver, Step, ToolContext,           the dependency tool's contract: commands as data
      ChecksLockfiles, JAIL_ENV_DIR
    DependencyFailure, LockfileRefused,    how dependencies and lockfiles are refused
      json_line
    InvalidRequest                         a request this server cannot take, by field
    strictjson                             JSON as RFC 8259 has it
    syntax (a submodule, imported by name) tree-sitter parsing: the server's extra, so
                                           not imported here (a client's CLI reads
                                           runtime.toml through this package too)
    BindMount, DatabaseConfig, ConfigError what a plugin attaching service resources needs
"""

from gristmill import strictjson
from gristmill.config import ConfigError, DatabaseConfig
from gristmill.errors import InvalidRequest
from gristmill.isolation.layout import JAIL_ENV_DIR
from gristmill.isolation.profile import BindMount
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.lockfiles import LockfileRefused, json_line
from gristmill.languages.plugin import ArgumentsRejected, LanguagePlugin
from gristmill.languages.registry import Registry, Runtime
from gristmill.languages.resolver import ChecksLockfiles, Resolver, Step, ToolContext
from gristmill.languages.spec import RuntimeSpec
from gristmill.model import Dependency, DependencySource, Job, Lockfile

__all__ = [
    "JAIL_ENV_DIR",
    "ArgumentsRejected",
    "BindMount",
    "ChecksLockfiles",
    "ConfigError",
    "DatabaseConfig",
    "Dependency",
    "DependencyFailure",
    "DependencySource",
    "InvalidRequest",
    "Job",
    "LanguagePlugin",
    "Lockfile",
    "LockfileRefused",
    "Registry",
    "Resolver",
    "Runtime",
    "RuntimeSpec",
    "Step",
    "ToolContext",
    "json_line",
    "strictjson",
]
