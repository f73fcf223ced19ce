"""The sandbox plan of a job's build step and of its run: its language's folder, its
environment and its build output, besides /job.

One function for both, so that both find the same things at the same paths under the
same variables (runtimes/PROTOCOL.md lists them for wrapper authors): the step's memory
limit among them where the language asks for it. Our variables
are set last: a job's own `env` cannot point them elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gristmill.isolation.backend import SandboxPlan
from gristmill.isolation.layout import (
    BUILD_VARIABLE,
    ENV_VARIABLE,
    JAIL_BUILD_DIR,
    JAIL_ENV_DIR,
    JAIL_RUNTIME_DIR,
    JAIL_SHARED_DIR,
    MEMORY_VARIABLE,
)
from gristmill.isolation.profile import BindMount
from gristmill.jobs.workspace import Workspace
from gristmill.languages import Runtime
from gristmill.model import Limits

__all__ = ["job_plan"]


def job_plan(
    runtime: Runtime,
    runtime_dir: Path,
    workspace: Workspace,
    argv: tuple[str, ...],
    env: Mapping[str, str],
    limits: Limits,
    environment_dir: Path | None,
    build_dir: Path | None,
    build_writable: bool = False,
    attached: Sequence[BindMount] = (),
    shared_dir: Path | None = None,
) -> SandboxPlan:
    """The plan of one of a job's sandboxes: `argv` with `env` over the profile's, under
    `limits`, in `workspace`.

    `runtime_dir` is the language's folder (read-only); `environment_dir` the installed
    dependencies (read-only); `build_dir` the build output: writable for the build
    step that fills it, read-only for the run that uses it; `attached` what the
    language's plugin provides to the run (`LanguagePlugin.attach`); `shared_dir` what the
    language's prime step left, read-only (build steps only).
    """
    mounts = [BindMount(str(runtime_dir), JAIL_RUNTIME_DIR)]
    variables: dict[str, str] = {}
    if runtime.spec.memory_variable:
        variables[MEMORY_VARIABLE] = str(limits.memory_bytes)
    if environment_dir is not None:
        mounts.append(BindMount(str(environment_dir), JAIL_ENV_DIR))
        variables[ENV_VARIABLE] = JAIL_ENV_DIR
    if build_dir is not None:
        mounts.append(BindMount(str(build_dir), JAIL_BUILD_DIR, writable=build_writable))
        variables[BUILD_VARIABLE] = JAIL_BUILD_DIR
    mounts.extend(attached)
    if shared_dir is not None:
        mounts.append(BindMount(str(shared_dir), JAIL_SHARED_DIR))
    return SandboxPlan(
        profile=runtime.profile.with_mounts(*mounts),
        argv=argv,
        env={**runtime.profile.env, **env, **variables},
        job_dir=workspace.job_dir,
        root_dir=workspace.root_dir,
        limits=limits,
    )
