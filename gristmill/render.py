"""How the commands show a job and its outcome, to a person or to a program: the job's
output as it streams, its dependency phases, the verdict line, and JSON.

One module for `gristmill run` and the queue's `enqueue --wait` and `queue wait`, so that
what a job writes reaches a terminal made harmless in one place. It sits below both the
CLI and the queue, which each import it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any, TextIO

from gristmill.jsonview import to_json
from gristmill.v1 import runtime_pb2 as pb

if TYPE_CHECKING:  # rich costs ~50 ms to import: only commands that draw load it
    from rich.console import Console
    from rich.status import Status

__all__ = ["Progress", "console", "print_json", "print_outcome", "visible", "write_output"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_C1 = re.compile(r"[\x7f-\x9f]")  # in JSON they can only stand inside strings


def visible(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape
    (`\\x1b`), so that a job cannot drive the terminal: set its title, write the
    clipboard (OSC 52), clear the screen."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found[0]):02x}", text)


def _for(stream: TextIO, text: str) -> str:
    return visible(text) if stream.isatty() else text


def write_output(stream: TextIO, data: bytes) -> None:
    """Some of a job's output: as its bytes into a pipe or file, made visible on a terminal."""
    if stream.isatty():
        stream.write(visible(data.decode(errors="replace")))
    else:
        stream.flush()
        stream.buffer.write(data)
    stream.flush()


def print_json(value: Any) -> None:
    """`value` as indented JSON on stdout: values JSON has no form for (times) as their
    text, and the control characters JSON leaves raw (DEL, C1) escaped like the others."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    print(_C1.sub(lambda found: f"\\u{ord(found[0]):04x}", text), flush=True)


def print_verdict(outcome: pb.Outcome) -> None:
    """The result on stdout when the job succeeded, else the verdict and error on stderr."""
    verdict = pb.Verdict.Name(outcome.verdict)
    if outcome.verdict == pb.SUCCESS:
        print(_for(sys.stdout, f"result: {outcome.result_json}"), flush=True)
    else:
        error = f"{outcome.error.name}: {outcome.error.message}" if outcome.error.name else ""
        print(_for(sys.stderr, f"{verdict}: {error or outcome.detail}"), file=sys.stderr)


def print_outcome(outcome: pb.Outcome, as_json: bool) -> None:
    """The Outcome in the `--json` shape, or its verdict line."""
    if as_json:
        print_json(to_json(outcome))
    else:
        print_verdict(outcome)


def console(stderr: bool = False) -> Console:
    """A console whose tables are never cut to 80 columns when piped."""
    from rich.console import Console

    shown = Console(stderr=stderr, highlight=False)
    if not shown.is_terminal:
        shown = Console(stderr=stderr, highlight=False, width=1000)
    return shown


class Progress:
    """Shows what a job's dependency phases are doing, from its stream's `phase` events:
    on a terminal each phase as a line and its progress on a spinner, else plain lines."""

    SHOWN = ("resolve", "install", "build")

    def __init__(self, quiet: bool = False) -> None:
        self._console: Console | None = None
        self._status: Status | None = None
        self._phase = ""
        self._quiet = quiet

    def show(self, phase: pb.Phase) -> None:
        if phase.name not in self.SHOWN or self._quiet:
            self.close()
            return
        from rich.markup import escape

        if self._console is None:
            self._console = console(stderr=True)
        if not self._console.is_terminal:
            print(f"{phase.name}: {phase.detail}".rstrip(": "), file=sys.stderr, flush=True)
            return
        if phase.name != self._phase:
            self._phase = phase.name
            self._console.print(f"[bold]{phase.name}[/bold] {escape(phase.detail)}")
        text = f"{phase.name}: {escape(phase.detail)}"
        if self._status is None:
            self._status = self._console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
