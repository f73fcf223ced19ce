"""`gristmill conformance`: the runtime conformance suite, which parses its own arguments
(`gristmill.conformance.runner`); the parser here only lists it in `gristmill --help`."""

from __future__ import annotations

from collections.abc import Sequence

from gristmill.cli.base import Room, Subcommands

__all__ = ["ROOM"]


def _add(commands: Subcommands) -> None:
    commands.add_parser(
        "conformance",
        help="the runtime conformance suite (gristmill conformance --help)",
        add_help=False,
    )


def _conformance(argv: Sequence[str]) -> int:
    from gristmill.conformance.runner import main

    return int(main(list(argv)))


ROOM = Room(add=_add, commands={}, forwarded={"conformance": _conformance})
