"""Bun as the TypeScript resolver: `bun install --lockfile-only` writes `bun.lock`, and
`bun install --frozen-lockfile` installs exactly that into the environment.

Both steps run Bun's own programs (`lock.ts`, `install_env.ts`, sent as the step's
files) because `bun install` writes its lockfile and node_modules into its working
directory, and a step's result is its stdout. Every install passes `--ignore-scripts`
(no package's lifecycle script ever runs, as is Bun's default for dependencies), uses
the hoisted layout (node_modules/<name>, found from /job/main.ts through /node_modules),
and copies files out of the shared download cache (`--backend=copyfile`): an
environment never shares an inode with the cache that later resolves write to. Then,
offline, `prewarm.ts` loads each package once to fill Bun's transpiler cache inside the
environment (`.transpiler-cache`), which jobs read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from gristmill.languages import Dependency, Lockfile, Step, ToolContext
from gristmill.languages.errors import DependencyFailure
from gristmill.languages.lockfiles import LockfileRefused

from . import lockfile as bunlock

_HERE = Path(__file__).parent
LOCK_PROGRAM = "lock.ts"
INSTALL_PROGRAM = "install_env.ts"
PREWARM_PROGRAM = "prewarm.ts"
TRANSPILER_CACHE = ".transpiler-cache"
"""Bun's transpiler cache inside an environment: filled by the install's offline step,
read (never written) by jobs, whose profile points BUN_RUNTIME_TRANSPILER_CACHE_PATH here."""
# No colours or progress bars: the lines are the job's progress and errors. No
# transpiler cache: the step's own little programs are transpiled in microseconds.
_ENV = {"NO_COLOR": "1", "BUN_RUNTIME_TRANSPILER_CACHE_PATH": "0", "DO_NOT_TRACK": "1"}


def _program(name: str) -> str:
    return (_HERE / name).read_text()


class Bun:
    name: str = "bun"
    lock_format: str = bunlock.BUN_LOCK
    programs: tuple[str, ...] = ("bun",)

    def version_argv(self, program_path: str) -> Sequence[str]:
        return (program_path, "--version")

    def _options(self, context: ToolContext) -> list[str]:
        options = ["--ignore-scripts", "--no-progress", "--linker=hoisted", "--no-summary"]
        options += ["--cache-dir", context.cache_dir]
        if context.index_urls:
            options += ["--registry", context.index_urls[0]]
        if context.system_certs:
            options.append("--use-system-ca")
        return options

    def lock(self, dependencies: Sequence[Dependency], context: ToolContext) -> Step:
        wanted: dict[str, str] = {}
        for dependency in dependencies:
            version_range = dependency.requirement.removeprefix(dependency.name).removeprefix("@")
            wanted[dependency.name] = version_range or "latest"
        manifest = {"name": bunlock.PROJECT_NAME, "private": True, "dependencies": wanted}
        return Step(
            argv=(f"{context.tools_dir}/bun", LOCK_PROGRAM, *self._options(context)),
            files={
                "package.json": json.dumps(manifest, indent=2) + "\n",
                LOCK_PROGRAM: _program(LOCK_PROGRAM),
            },
            env=_ENV,
            stdout_is_result=True,
        )

    def check_lockfile(self, content: str) -> None:
        """Only registry packages with integrity (`bunlock.check`); raises `LockfileRefused`."""
        bunlock.check(content)

    def install(self, lockfile: Lockfile, context: ToolContext) -> Step:
        try:
            checked = bunlock.check(lockfile.content)
        except LockfileRefused as refused:
            raise DependencyFailure(f"the lockfile: {refused}") from refused
        argv = [f"{context.tools_dir}/bun", INSTALL_PROGRAM, context.build_dir]
        argv += ["--frozen-lockfile", "--production", "--backend=copyfile", *self._options(context)]
        # Loading the packages runs their code: offline, where it reaches only this
        # environment (which every job loading it trusts anyway), never the registry or
        # the download cache other environments are installed from.
        prewarm = Step(
            argv=(f"{context.tools_dir}/bun", PREWARM_PROGRAM, context.build_dir),
            files={PREWARM_PROGRAM: _program(PREWARM_PROGRAM)},
            env={
                **_ENV,
                "BUN_RUNTIME_TRANSPILER_CACHE_PATH": f"{context.build_dir}/{TRANSPILER_CACHE}",
            },
        )
        return Step(
            argv=tuple(argv),
            files={**checked.render(), INSTALL_PROGRAM: _program(INSTALL_PROGRAM)},
            env=_ENV,
            then_offline=prewarm,
        )
