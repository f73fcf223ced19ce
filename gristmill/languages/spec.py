"""`runtime.toml`: the declarative description of one language."""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gristmill.errors import GristmillError
from gristmill.model import Limits

MiB = 1024 * 1024
DEFAULT_BUILD_LIMITS = Limits(
    wall_time_ms=60_000,
    memory_bytes=1024 * MiB,
    cpu_time_ms=60_000,
    processes=64,
    output_bytes=MiB,
)
"""A build step's limits unless its `[build]` table says otherwise; never a job's own.
`output_bytes` caps what is kept of the compiler's messages."""


class SpecError(GristmillError):
    """A runtime.toml is malformed."""


class ResultFallback(enum.Enum):
    """What the result is when the wrapper wrote none and the program exited 0."""

    NONE = "none"
    LAST_STDOUT_LINE = "last_stdout_line"


@dataclass(frozen=True)
class BuildSpec:
    """`[build]`: the compile step, run once per distinct job and cached (`jobs.build`).

    It runs in a sandbox of its own with no network, in a copy of the job's directory
    (its code, files and what the plugin generates), and writes into `JAIL_BUILD_DIR`.
    """

    # The compiler's argv, run in /job; relative paths are the job's files.
    run: tuple[str, ...]
    # Paths under JAIL_BUILD_DIR the step must leave; a build without them failed.
    outputs: tuple[str, ...]
    # Added to the profile's environment, e.g. a compiler's cache or home directory.
    env: Mapping[str, str] = field(default_factory=dict)
    # `network` is always off: a build sees only the job's files and its environment.
    limits: Limits = DEFAULT_BUILD_LIMITS
    # A trusted step run once per toolchain (no job's input in it, same env and limits),
    # its output shared read-only with every build at JAIL_SHARED_DIR; () for none.
    prime: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    display_name: str
    extensions: tuple[str, ...]
    # The file name the job's code is written to inside the job directory.
    source_file: str
    default_entry_point: str
    # The program started in the sandbox; it reads the job message on fd 4.
    run: tuple[str, ...]
    # Host paths that must exist for the language to be available.
    requires: tuple[str, ...]
    version_command: tuple[str, ...]
    result_fallback: ResultFallback
    folder: Path
    # The compile step; None for a language that runs its source as it is.
    build: BuildSpec | None = None
    # Whether its steps get their memory limit in MEMORY_VARIABLE.
    memory_variable: bool = False
    # Whether its wrapper reads the job's context variables at the start of fd 4 and
    # sets them before it loads the job's code (runtimes/PROTOCOL.md): only then can a
    # warm sandbox, started before its job was known, run a job of this language.
    message_context: bool = False
    # Whether its wrapper can run the code as a plain script with positional arguments
    # (`Job.script`), told so by the job message.
    script: bool = False
    # `[env] refused`: the variables `Job.env` may not set, because they change what
    # the language's wrapper, interpreter or runtime does (`NAME`, or `PREFIX*`); those
    # of the loader and C library, refused for every language, are `server.validate`'s.
    env_refused: tuple[str, ...] = ()


_BUILD_LIMITS = ("wall_time_ms", "memory_bytes", "cpu_time_ms", "processes", "output_bytes")


def _build_spec(data: Mapping[str, Any]) -> BuildSpec:
    unknown = set(data) - {"run", "outputs", "env", "prime", *_BUILD_LIMITS}
    if unknown:
        raise ValueError(f"[build]: unknown keys {sorted(unknown)}")
    run, outputs = tuple(data["run"]), tuple(data["outputs"])
    if not run or not outputs:
        raise ValueError("[build]: run and outputs must not be empty")
    for output in outputs:
        if PurePosixPath(output).is_absolute() or ".." in PurePosixPath(output).parts:
            raise ValueError(f"[build]: output {output!r} must be a path inside the build dir")

    def limit(name: str) -> int:
        return int(data.get(name, getattr(DEFAULT_BUILD_LIMITS, name)))

    return BuildSpec(
        run=run,
        outputs=outputs,
        env={str(name): str(value) for name, value in data.get("env", {}).items()},
        prime=tuple(str(arg) for arg in data.get("prime", ())),
        limits=Limits(
            wall_time_ms=limit("wall_time_ms"),
            memory_bytes=limit("memory_bytes"),
            cpu_time_ms=limit("cpu_time_ms"),
            processes=limit("processes"),
            output_bytes=limit("output_bytes"),
        ),
    )


ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
"""A variable's name, or a prefix ended by `*`: the names an `[env] refused` entry is."""


def _env_refused(data: Mapping[str, Any]) -> tuple[str, ...]:
    unknown = set(data) - {"refused"}
    if unknown:
        raise ValueError(f"[env]: unknown keys {sorted(unknown)}")
    refused = data.get("refused", [])
    if not isinstance(refused, list):  # a string would be read as its letters
        raise ValueError(f"[env]: refused {refused!r} is not a list")
    for pattern in refused:
        if not isinstance(pattern, str) or not ENV_PATTERN.fullmatch(pattern):
            raise ValueError(f"[env]: refused {pattern!r} is not a NAME or a PREFIX*")
    return tuple(refused)


def load_spec(folder: Path) -> RuntimeSpec:
    path = folder / "runtime.toml"
    data = tomllib.loads(path.read_text())
    try:
        return RuntimeSpec(
            name=data["name"],
            display_name=data.get("display_name", data["name"]),
            extensions=tuple(data["extensions"]),
            source_file=data["source_file"],
            default_entry_point=data.get("default_entry_point", "main"),
            run=tuple(data["run"]),
            requires=tuple(data.get("requires", ())),
            version_command=tuple(data["version_command"]),
            result_fallback=ResultFallback(data.get("result_fallback", "none")),
            folder=folder,
            build=_build_spec(data["build"]) if "build" in data else None,
            memory_variable=bool(data.get("memory_variable", False)),
            message_context=bool(data.get("message_context", False)),
            script=bool(data.get("script", False)),
            env_refused=_env_refused(data.get("env", {})),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise SpecError(f"{path}: {error!r}") from error
