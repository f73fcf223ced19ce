"""`runtime.toml`: the declarative description of one language."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from gristmill import typed_toml
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


ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
"""A variable's name, or a prefix ended by `*`: the names an `[env] refused` entry is."""

_FILE = ConfigDict(extra="forbid", strict=True)
"""runtime.toml's tables: unknown keys refused, values of their declared type."""
_Steps = Annotated[list[str], Field(min_length=1)]


def _inside(output: str) -> str:
    if PurePosixPath(output).is_absolute() or ".." in PurePosixPath(output).parts:
        raise ValueError(f"output {output!r} must be a path inside the build dir")
    return output


class _BuildTable(BaseModel):
    """`[build]` as written; `network` is no key of it: a build never has the network."""

    model_config = _FILE
    run: _Steps
    outputs: Annotated[list[Annotated[str, AfterValidator(_inside)]], Field(min_length=1)]
    env: dict[str, str] = {}
    prime: list[str] = []
    wall_time_ms: int = Field(DEFAULT_BUILD_LIMITS.wall_time_ms, ge=1)
    memory_bytes: int = Field(DEFAULT_BUILD_LIMITS.memory_bytes, ge=1)
    cpu_time_ms: int = Field(DEFAULT_BUILD_LIMITS.cpu_time_ms, ge=1)
    processes: int = Field(DEFAULT_BUILD_LIMITS.processes, ge=1)
    output_bytes: int = Field(DEFAULT_BUILD_LIMITS.output_bytes, ge=1)

    def spec(self) -> BuildSpec:
        limits = Limits(
            wall_time_ms=self.wall_time_ms,
            memory_bytes=self.memory_bytes,
            cpu_time_ms=self.cpu_time_ms,
            processes=self.processes,
            output_bytes=self.output_bytes,
        )
        run, outputs, prime = tuple(self.run), tuple(self.outputs), tuple(self.prime)
        return BuildSpec(run=run, outputs=outputs, env=self.env, limits=limits, prime=prime)


class _EnvTable(BaseModel):
    model_config = _FILE
    refused: list[Annotated[str, StringConstraints(pattern=f"^(?:{ENV_PATTERN.pattern})$")]] = []


class _RuntimeFile(BaseModel):
    """runtime.toml as written: each key of `RuntimeSpec`, its type and its default."""

    model_config = _FILE
    name: str
    display_name: str | None = None
    extensions: list[str]
    source_file: str
    default_entry_point: str = "main"
    run: _Steps
    requires: list[str] = []
    version_command: _Steps
    result_fallback: Literal["none", "last_stdout_line"] = "none"
    build: _BuildTable | None = None
    memory_variable: bool = False
    message_context: bool = False
    script: bool = False
    env: _EnvTable = _EnvTable()
    # The language's benchmark (bench/): its own keys, never read by the server.
    bench: dict[str, Any] = {}


def load_spec(folder: Path) -> RuntimeSpec:
    """The language of `folder`, from its runtime.toml; SpecError names the key and line."""
    path = folder / "runtime.toml"
    data, text = typed_toml.read(path, SpecError)
    file: _RuntimeFile = typed_toml.validate(_RuntimeFile, data, path, text, SpecError)
    return RuntimeSpec(
        name=file.name,
        display_name=file.display_name or file.name,
        extensions=tuple(file.extensions),
        source_file=file.source_file,
        default_entry_point=file.default_entry_point,
        run=tuple(file.run),
        requires=tuple(file.requires),
        version_command=tuple(file.version_command),
        result_fallback=ResultFallback(file.result_fallback),
        folder=folder,
        build=file.build.spec() if file.build else None,
        memory_variable=file.memory_variable,
        message_context=file.message_context,
        script=file.script,
        env_refused=tuple(file.env.refused),
    )
