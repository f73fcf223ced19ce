"""What a job's sandboxes see besides /job: its language's folder, environment and build.

One function for the build step and the run, so that both find the same things at the
same paths under the same variables (runtimes/PROTOCOL.md lists them for wrapper
authors). Our variables are set last: a job's own `env` cannot point them elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from gristmill.deps import PreparedEnvironment
from gristmill.deps.tool import ENV_VARIABLE, JAIL_ENV_DIR
from gristmill.isolation.profile import BindMount
from gristmill.languages.spec import BUILD_VARIABLE, JAIL_BUILD_DIR, JAIL_RUNTIME_DIR

__all__ = ["job_mounts"]


def job_mounts(
    runtime_dir: Path,
    environment: PreparedEnvironment | None,
    build_dir: Path | None,
    build_writable: bool = False,
) -> tuple[tuple[BindMount, ...], dict[str, str]]:
    """The bind mounts and environment variables for a job's sandbox.

    `runtime_dir` is the language's folder (read-only); `environment` the installed
    dependencies (read-only); `build_dir` the build output: writable for the build
    step that fills it, read-only for the run that uses it.
    """
    mounts = [BindMount(str(runtime_dir), JAIL_RUNTIME_DIR)]
    variables: dict[str, str] = {}
    if environment is not None:
        mounts.append(BindMount(str(environment.path), JAIL_ENV_DIR))
        variables[ENV_VARIABLE] = JAIL_ENV_DIR
    if build_dir is not None:
        mounts.append(BindMount(str(build_dir), JAIL_BUILD_DIR, writable=build_writable))
        variables[BUILD_VARIABLE] = JAIL_BUILD_DIR
    return tuple(mounts), variables
