"""`gristmill run`, a file as a job with its output streaming, and `gristmill cancel`."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import grpc

from gristmill import render
from gristmill.cli import target
from gristmill.cli.base import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    Interrupted,
    Room,
    Subcommands,
    UsageError,
    command,
    read_text,
    write_text,
)
from gristmill.client import Client
from gristmill.jsonview import to_json
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["ROOM", "script_arguments"]

MiB = 1024 * 1024


def _add(commands: Subcommands) -> None:
    run = command(
        commands,
        "run",
        "run one file as a job, streaming its output",
        "Runs FILE as a job: its output streams as it is written, then the result (or the "
        "verdict and error) is printed. Ctrl-C cancels the job.",
        "  gristmill run job.py --arg a=40 --arg b=2\n"
        "  gristmill run job.py --args '{\"a\": 40}' --json\n"
        "  gristmill run script.sh --env GREETING=hi --file data.csv --timeout-ms 5000\n"
        "  gristmill run job.py --lockfile requirements.lock\n"
        "  gristmill run report.py --output-file 'out/*.csv' --output-dir results\n"
        "  seq 10 | gristmill run sum.sh --stdin - --context TEAM=blue\n"
        "  gristmill run tool.py --script -- --verbose input.txt",
    )
    repeated = functools.partial(run.add_argument, action="append", default=[])
    run.add_argument("file", type=Path, metavar="FILE", help="the job's code")
    run.add_argument(
        "argv",
        nargs="*",
        metavar="ARG",
        help="with --script: the script's positional arguments (after --)",
    )
    run.add_argument("--lang", metavar="LANGUAGE", help="language (default: from FILE's extension)")
    run.add_argument("--args", dest="args_json", metavar="JSON", help="arguments as a JSON object")
    repeated(
        "--arg",
        metavar="NAME=VALUE",
        help="one argument; VALUE as JSON, else as a string (repeatable)",
    )
    run.add_argument("--entry-point", metavar="NAME", help="function to call (default: main)")
    repeated("--env", metavar="NAME=VALUE", help="an environment variable of the job (repeatable)")
    repeated(
        "--file",
        dest="files",
        metavar="PATH[:AS]",
        help="a file placed beside the code, at AS (default: its name) (repeatable)",
    )
    run.add_argument("--job-id", metavar="ID", help="the job's id (default: a new uuid)")
    run.add_argument(
        "--stdin", type=Path, metavar="FILE", help="the job's standard input ('-': this one's)"
    )
    repeated(
        "--context",
        metavar="KEY=VALUE",
        help="context the job sees as GRISTMILL_CTX_KEY (repeatable)",
    )
    repeated(
        "--output-file",
        dest="output_files",
        metavar="PATTERN",
        help="a path or glob under /job whose files come back (repeatable)",
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="where the files of --output-file are written (default: here)",
    )
    run.add_argument(
        "--script",
        action="store_true",
        help="run FILE as a plain script with ARGs instead of calling its entry point",
    )
    limits = run.add_argument_group(
        "limits (0: the server's default; a value over its maximum is refused)"
    )
    for flag, metavar, text in (
        ("--timeout-ms", "MS", "wall time (default 10000, at most 900000)"),
        ("--cpu-ms", "MS", "CPU time (default 10000, at most 900000)"),
        ("--memory-mb", "MB", "memory (default 256, at most 8192)"),
        ("--processes", "N", "processes (default 64, at most 1024)"),
        ("--output-bytes", "BYTES", "cap on stdout and on stderr (default 1 MiB, at most 64 MiB)"),
    ):
        limits.add_argument(flag, type=int, default=0, metavar=metavar, help=text)
    limits.add_argument(
        "--network", action="store_true", help="ask for the network (the server must allow it)"
    )
    run.add_argument(
        "--lockfile",
        type=Path,
        metavar="FILE",
        help="install exactly this lockfile (never resolve again)",
    )
    run.add_argument(
        "--save-lockfile", type=Path, metavar="FILE", help="write the lockfile the job used"
    )
    target.client_flags(run, "print the Outcome as JSON (no live output)")

    cancel = command(
        commands,
        "cancel",
        "cancel a running job by its id",
        "Cancels a job; when this returns, its processes are gone. Exits 1 if no job with "
        "that id was running.",
        "  gristmill cancel 3f1c0e9a-... --target 127.0.0.1:50051",
    )
    cancel.add_argument("job_id", metavar="JOB_ID", help="the job's id (Outcome.job_id)")
    target.client_flags(cancel, "print the response as JSON")


def _pairs(values: list[str], flag: str) -> Iterator[tuple[str, str]]:
    for pair in values:
        name, equals, text = pair.partition("=")
        if not equals or not name:
            raise UsageError(f"{flag} {pair!r}: expected NAME=VALUE")
        yield name, text


def _parse_args(options: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if options.args_json:
        try:
            args = json.loads(options.args_json)
        except json.JSONDecodeError as error:
            raise UsageError(f"--args is not JSON: {error}") from error
        if not isinstance(args, dict):
            raise UsageError("--args must be a JSON object")
    for name, text in _pairs(options.arg, "--arg"):
        try:
            args[name] = json.loads(text)
        except json.JSONDecodeError:
            args[name] = text
    return args


def _files(options: argparse.Namespace) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for spec in options.files:
        source, colon, placed = spec.partition(":")
        path = Path(source)
        try:
            files[placed if colon else path.name] = path.read_bytes()
        except OSError as error:
            raise UsageError(f"--file {spec}: cannot read {path}: {error.strerror}") from error
    return files


def _stream(client: Client, request: dict[str, Any], live: bool) -> pb.Outcome:
    """The job's Outcome; with `live`, its output written as it comes."""
    progress = render.Progress(quiet=not live)
    streamed = {"stdout": False, "stderr": False}
    try:
        for event in client.execute_stream(**request):
            kind = event.WhichOneof("event")
            if kind == "phase":
                progress.show(event.phase)
            elif kind in streamed and live:
                progress.close()
                streamed[kind] = True
                render.write_output(
                    sys.stdout if kind == "stdout" else sys.stderr, getattr(event, kind)
                )
            elif kind == "outcome":
                outcome: pb.Outcome = event.outcome
                if live:
                    # A request that joined a finished run gets no output events.
                    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
                        if not streamed[name]:
                            render.write_output(stream, getattr(outcome, name).data)
                return outcome
    except KeyboardInterrupt:
        progress.close()
        with contextlib.suppress(grpc.RpcError, KeyboardInterrupt):
            client.cancel(request["job_id"], timeout_s=10)
        raise Interrupted(request["job_id"]) from None
    finally:
        progress.close()
    raise UsageError("the server ended the stream without an outcome")


def _run(options: argparse.Namespace) -> int:
    code = read_text(options.file)
    lockfile = pb.Lockfile(content=read_text(options.lockfile)) if options.lockfile else None
    request = {
        "language": target.language(options),
        "code": code,
        "args": _parse_args(options),
        "job_id": options.job_id or str(uuid.uuid4()),
        "entry_point": options.entry_point,
        "env": dict(_pairs(options.env, "--env")),
        "files": _files(options),
        "limits": pb.Limits(
            wall_time_ms=options.timeout_ms,
            cpu_time_ms=options.cpu_ms,
            memory_bytes=options.memory_mb * MiB,
            processes=options.processes,
            output_bytes=options.output_bytes,
            network=options.network,
        ),
        "lockfile": lockfile,
        "stdin": _stdin(options.stdin),
        "context": dict(_pairs(options.context, "--context")),
        "output_files": options.output_files,
        "script": options.argv if options.script else None,
    }
    if options.argv and not options.script:
        raise UsageError(f"unexpected arguments {options.argv}: a script's need --script")
    with target.server(options) as address, target.client(address, options) as client:
        outcome = _stream(client, request, live=not options.json)
    if options.save_lockfile and outcome.HasField("lockfile"):
        write_text(options.save_lockfile, outcome.lockfile.content)
    _save_files(outcome, options.output_dir, quiet=options.json)
    render.print_outcome(outcome, as_json=options.json)
    return EXIT_OK if outcome.verdict == pb.SUCCESS else EXIT_JOB_FAILED


def _stdin(path: Path | None) -> bytes:
    if path is None:
        return b""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error


def _save_files(outcome: pb.Outcome, directory: Path, quiet: bool) -> None:
    """Writes the files the job gave back under `directory`, never outside it."""
    for returned in outcome.files:
        relative = PurePosixPath(returned.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise UsageError(f"the server returned a file outside the job: {returned.path!r}")
        written = directory / relative
        try:
            written.parent.mkdir(parents=True, exist_ok=True)
            written.write_bytes(returned.content)
        except OSError as error:
            raise UsageError(f"cannot write {written}: {error.strerror}") from error
        if not quiet:
            print(f"wrote {written} ({len(returned.content)} bytes)", file=sys.stderr)


def _cancel(options: argparse.Namespace) -> int:
    with target.server(options) as address, target.client(address, options) as client:
        cancelled = client.cancel(options.job_id)
    if options.json:
        render.print_json(to_json(pb.CancelResponse(cancelled=cancelled)))
    else:
        print(f"{options.job_id}: {'cancelled' if cancelled else 'not running'}")
    return EXIT_OK if cancelled else EXIT_JOB_FAILED


def script_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """`run FILE --script -- ARG...`: what follows `--` is the script's, options or not,
    so it is kept from the parser and added to `ARG`s afterwards."""
    if argv[:1] == ["run"] and "--" in argv:
        return argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    return argv, []


ROOM = Room(add=_add, commands={"run": _run, "cancel": _cancel})
