"""`runtime.toml`: the declarative description of one language."""

from __future__ import annotations

import enum
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gristmill.errors import GristmillError

JAIL_RUNTIME_DIR = "/gristmill/runtime"
"""Where a language's folder is mounted, read-only, inside the sandbox."""
JAIL_JOB_DIR = "/job"
"""The job's own directory inside the sandbox: its working directory, writable."""


class SpecError(GristmillError):
    """A runtime.toml is malformed."""


class ResultFallback(enum.Enum):
    """What the result is when the wrapper wrote none and the program exited 0."""

    NONE = "none"
    LAST_STDOUT_LINE = "last_stdout_line"


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
        )
    except (KeyError, ValueError, TypeError) as error:
        raise SpecError(f"{path}: {error!r}") from error
