"""`gristmill worker`, `enqueue` and `queue ...`: declared and run by the queue's own
`gristmill.queue.cli`; this room hands them the CLI's command factory."""

from __future__ import annotations

from gristmill.cli.base import Room, Subcommands, command
from gristmill.queue import cli as queue_cli

__all__ = ["ROOM"]


def _add(commands: Subcommands) -> None:
    queue_cli.add_commands(commands, command)


ROOM = Room(add=_add, commands=queue_cli.COMMANDS)
