"""The jail's layout: where each thing a step sees is mounted, and the variables naming them.

One module at the isolation layer, so that the backends, the builds, the resolver's
sandbox and the languages' plugins all read the same paths without reaching up into
the layers that use them.
"""

from __future__ import annotations

__all__ = [
    "BUILD_VARIABLE",
    "ENV_VARIABLE",
    "JAIL_BUILD_DIR",
    "JAIL_ENV_DIR",
    "JAIL_JOB_DIR",
    "JAIL_RUNTIME_DIR",
    "JAIL_SHARED_DIR",
    "JAIL_TOOLS_DIR",
    "JAIL_TOOL_CACHE_DIR",
    "MEMORY_VARIABLE",
]

JAIL_RUNTIME_DIR = "/gristmill/runtime"
"""Where a language's folder is mounted, read-only, inside the sandbox."""
JAIL_JOB_DIR = "/job"
"""The job's own directory inside the sandbox: its working directory, writable."""
JAIL_BUILD_DIR = "/gristmill/build"
"""What a step produces: writable while a build (or an install) step fills it, then
mounted read-only into the job's run sandbox; `BUILD_VARIABLE` there says so."""
BUILD_VARIABLE = "GRISTMILL_BUILD"
JAIL_SHARED_DIR = "/gristmill/shared"
"""What a `[build]` table's trusted `prime` step produced, mounted read-only into every
build step of that language (e.g. a compiler cache of its standard library)."""
MEMORY_VARIABLE = "GRISTMILL_MEMORY_BYTES"
"""The memory limit of the step, in bytes, set for a language whose runtime.toml asks
(`memory_variable = true`): a runtime that must size itself to it (a JVM's heap, a
garbage collector's target) cannot see the cgroup's limit from inside the sandbox."""
JAIL_TOOLS_DIR = "/gristmill/tools"
"""Where the resolver's programs are mounted, read-only, in the resolve sandbox."""
JAIL_TOOL_CACHE_DIR = "/gristmill/cache"
"""The resolver's own download cache, writable and shared by every resolve and install
(which is why no package's build code may run there unless the service allows it)."""
JAIL_ENV_DIR = "/gristmill/env"
"""Where a job finds its environment, read-only; `ENV_VARIABLE` in its environment says so."""
ENV_VARIABLE = "GRISTMILL_ENVIRONMENT"
