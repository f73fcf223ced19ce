"""What every room of the `gristmill` command shares: the exit codes, the errors that end
a command, how a command's parser is made (so that every `--help` has examples and the
exit codes) and how a room says what it adds.

The rooms import these from here, never from `gristmill.cli` itself, which imports them.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

__all__ = [
    "EXIT_CODES",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "Formatter",
    "Interrupted",
    "Room",
    "Subcommands",
    "UsageError",
    "command",
    "read_text",
    "write_text",
]

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_CODES = """\
exit status:
  0    success (the job's verdict was SUCCESS; the checks passed)
  1    the job ended with another verdict, resolution failed, or a check failed
  2    usage error, or the call failed (the server refused it or could not be reached)
  130  interrupted (Ctrl-C); a running job is cancelled first
"""

Subcommands: TypeAlias = Any
"""`argparse`'s subparsers action (its class is private), which `command` adds to."""

Command = Callable[[argparse.Namespace], int]
"""A command's body: the parsed options in, the exit status out."""


@dataclasses.dataclass(frozen=True)
class Room:
    """A group of commands: `add` declares their parsers, `commands` runs each by name.

    `forwarded` are commands that parse their own arguments: `main` hands them the rest
    of the command line untouched (their parser here is only for `gristmill --help`).
    """

    add: Callable[[Subcommands], None]
    commands: Mapping[str, Command]
    forwarded: Mapping[str, Callable[[Sequence[str]], int]] = dataclasses.field(
        default_factory=dict
    )


class UsageError(Exception):
    """The command line cannot be carried out as given."""


class Interrupted(Exception):
    """Ctrl-C during a job: it was cancelled."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' and exit codes' line breaks; wider help columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def command(
    commands: Subcommands, name: str, help_text: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand's parser, its help ending with its examples and the exit codes."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=f"examples:\n{examples}\n\n{EXIT_CODES}",
        formatter_class=Formatter,
        # `--arg` must never be taken for `--args` (or any flag for a longer one).
        allow_abbrev=False,
    )
    return parser


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from error
