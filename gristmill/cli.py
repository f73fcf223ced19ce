"""The `gristmill` command: run, resolve or describe a file as a job, cancel a job, list
runtimes, check the host, serve, demo, conformance.

Commands that talk to a server use `--target` (or `$GRISTMILL_TARGET`): `HOST:PORT`,
`unix:PATH`, or `embedded` for a server inside the command for its duration. Without
one they use the user's local server, started in the background on first use and
reused by later commands (`gristmill stop` stops it; see `gristmill.local`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

import grpc

from gristmill import __version__, settings_reference
from gristmill.client import Client, RetryPolicy, outcome_result, too_large
from gristmill.config import LOG_FORMATS, LOG_LEVELS, ServerConfig, load_config
from gristmill.credentials import add_credential_flags, credentials_from_options
from gristmill.errors import GristmillError
from gristmill.interceptors import Handler, HandlerWrapper
from gristmill.jsonview import failure, to_json
from gristmill.queue import cli as queue_commands
from gristmill.v1 import runtime_pb2 as pb

if TYPE_CHECKING:  # rich costs ~50 ms to import: only commands that draw load it
    from rich.console import Console
    from rich.status import Status

__all__ = ["main"]

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MiB = 1024 * 1024
TARGET_VARIABLE = "GRISTMILL_TARGET"
EMBEDDED = "embedded"

EXIT_CODES = """\
exit status:
  0    success (the job's verdict was SUCCESS; the checks passed)
  1    the job ended with another verdict, resolution failed, or a check failed
  2    usage error, or the call failed (the server refused it or could not be reached)
  130  interrupted (Ctrl-C); a running job is cancelled first
"""

TARGET_HELP = (
    "the server: HOST:PORT, unix:PATH, or 'embedded' (a server inside this command). "
    f"Default: ${TARGET_VARIABLE}, else the user's local server, started on first use"
)

NETWORK_HINT = (
    "the server does not allow the network: start it with `gristmill serve --allow-network` "
    "(or GRISTMILL_MAX_LIMITS_NETWORK=true; the local server picks that variable up too)"
)


class UsageError(Exception):
    """The command line cannot be carried out as given."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' and exit codes' line breaks; wider help columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _command(
    commands: Any, name: str, help_text: str, description: str, examples: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=f"examples:\n{examples}\n\n{EXIT_CODES}",
        formatter_class=_Formatter,
    )
    return parser


def _server_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that set `ServerConfig` values; each `dest` is the setting's flat key."""
    group = parser.add_argument_group("server settings (embedded or local server)")
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (default: $GRISTMILL_CONFIG)",
    )
    group.add_argument(
        "--sandbox",
        dest="sandbox_backend",
        choices=["process", "nsjail"],
        help="sandbox backend (default: nsjail when it works here, else process)",
    )
    group.add_argument(
        "--work-dir",
        dest="work_dir",
        type=Path,
        metavar="DIR",
        help="caches and job directories (default: /var/lib/gristmill as root)",
    )


def _client_flags(parser: argparse.ArgumentParser, json_help: str) -> None:
    parser.add_argument("--target", metavar="ADDRESS", help=TARGET_HELP)
    parser.add_argument("--json", action="store_true", help=json_help)
    add_credential_flags(parser)
    _server_flags(parser)


def _add_run(commands: Any) -> None:
    run = _command(
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
    run.add_argument("file", type=Path, metavar="FILE", help="the job's code")
    run.add_argument(
        "argv",
        nargs="*",
        metavar="ARG",
        help="with --script: the script's positional arguments (after --)",
    )
    run.add_argument("--lang", metavar="LANGUAGE", help="language (default: from FILE's extension)")
    run.add_argument("--args", dest="args_json", metavar="JSON", help="arguments as a JSON object")
    run.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one argument; VALUE as JSON, else as a string (repeatable)",
    )
    run.add_argument("--entry-point", metavar="NAME", help="function to call (default: main)")
    run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the job (repeatable)",
    )
    run.add_argument(
        "--file",
        dest="files",
        action="append",
        default=[],
        metavar="PATH[:AS]",
        help="a file placed beside the code, at AS (default: its name) (repeatable)",
    )
    run.add_argument("--job-id", metavar="ID", help="the job's id (default: a new uuid)")
    run.add_argument(
        "--stdin", type=Path, metavar="FILE", help="the job's standard input ('-': this one's)"
    )
    run.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="context the job sees as GRISTMILL_CTX_KEY (repeatable)",
    )
    run.add_argument(
        "--output-file",
        dest="output_files",
        action="append",
        default=[],
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
    _client_flags(run, "print the Outcome as JSON (no live output)")


def _add_serve(commands: Any) -> None:
    serve = _command(
        commands,
        "serve",
        "run the gRPC server",
        "Runs the gRPC server until SIGINT or SIGTERM. Settings come from the TOML file, "
        "then GRISTMILL_* variables, then these flags.",
        "  gristmill serve --address 0.0.0.0:50051 --concurrency 4\n"
        "  gristmill serve --address unix:/run/gristmill.sock --allow-network",
    )
    _server_flags(serve)
    serve.add_argument(
        "--address",
        metavar="ADDRESS",
        help="HOST:PORT or unix:PATH to listen on (default: 127.0.0.1:50051)",
    )
    serve.add_argument(
        "--concurrency",
        dest="max_concurrent_jobs",
        type=int,
        metavar="N",
        help="jobs running at once (default: the number of CPUs)",
    )
    serve.add_argument(
        "--queue",
        dest="max_queued_jobs",
        type=int,
        metavar="N",
        help="jobs waiting beyond those (default: 4 x concurrency)",
    )
    for flag, key, metavar, text in (
        ("--default-timeout-ms", "default_limits.wall_time_ms", "MS", "default wall time (10000)"),
        (
            "--default-memory-bytes",
            "default_limits.memory_bytes",
            "BYTES",
            "default memory (256 MiB)",
        ),
        ("--max-timeout-ms", "max_limits.wall_time_ms", "MS", "largest wall time (900000)"),
        ("--max-memory-bytes", "max_limits.memory_bytes", "BYTES", "largest memory (8 GiB)"),
        ("--max-processes", "max_limits.processes", "N", "largest process limit (1024)"),
        ("--max-output-bytes", "max_limits.output_bytes", "BYTES", "largest output cap (64 MiB)"),
    ):
        serve.add_argument(flag, dest=key, type=int, metavar=metavar, help=text)
    serve.add_argument(
        "--allow-network",
        dest="max_limits.network",
        action="store_true",
        default=None,
        help="let jobs ask for the network (default: refused)",
    )
    serve.add_argument(
        "--drain-grace-s",
        dest="drain_grace_s",
        type=float,
        metavar="S",
        help="at SIGTERM, how long jobs in flight may take before they are cancelled (30)",
    )
    access = serve.add_argument_group("access (see README, Operations: access and shutdown)")
    for flag, key, text in (
        ("--tls-cert", "auth.tls_cert_file", "the server's certificate chain (PEM): TLS"),
        ("--tls-key", "auth.tls_key_file", "its private key (PEM)"),
        ("--client-ca", "auth.client_ca_file", "CAs of client certificates: mutual TLS"),
        ("--tokens-file", "auth.tokens_file", "bearer tokens, NAME:TOKEN a line"),
    ):
        access.add_argument(flag, dest=key, type=Path, metavar="FILE", help=text)
    access.add_argument(
        "--insecure",
        dest="auth.insecure",
        action="store_true",
        default=None,
        help="listen beyond loopback without authentication, or tokens without TLS",
    )
    serve.add_argument(
        "--idle-exit-s",
        type=float,
        metavar="S",
        help="exit after this long without a call (default: never; the local server: 900)",
    )
    telemetry = serve.add_argument_group("logs, metrics, traces")
    telemetry.add_argument(
        "--log-level",
        dest="telemetry.log_level",
        choices=LOG_LEVELS,
        help="least severe records logged (default: INFO, a line per job)",
    )
    telemetry.add_argument(
        "--log-format",
        dest="telemetry.log_format",
        choices=LOG_FORMATS,
        help="json, logfmt, console, or auto: console on a terminal, else json (default)",
    )
    telemetry.add_argument(
        "--metrics-address",
        dest="telemetry.metrics_address",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: none)",
    )
    telemetry.add_argument(
        "--otlp-endpoint",
        dest="telemetry.otlp_endpoint",
        metavar="URL",
        help="export traces to this OTLP/gRPC collector, e.g. http://127.0.0.1:4317 "
        "(default: no tracing)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gristmill",
        description=__doc__,
        epilog=EXIT_CODES + "\nhelp on a command: gristmill COMMAND --help",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)

    resolve = _command(
        commands,
        "resolve",
        "find a file's dependencies and pin them, without running it",
        "Prints the dependencies FILE needs (declared or inferred, and where) on stderr and "
        "their lockfile on stdout (or in --output).",
        "  gristmill resolve job.py -o requirements.lock\n  gristmill resolve job.py --json",
    )
    resolve.add_argument("file", type=Path, metavar="FILE", help="the job's code")
    resolve.add_argument("--lang", metavar="LANGUAGE", help="language (default: from extension)")
    resolve.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write the lockfile here, not to stdout"
    )
    _client_flags(resolve, "print the response as JSON")

    describe = _command(
        commands,
        "describe",
        "print a file's entry point parameters as a JSON Schema",
        "Parses FILE (without running it) and prints its entry point's parameters.",
        "  gristmill describe job.py\n  gristmill describe job.py --entry-point handler --json",
    )
    describe.add_argument("file", type=Path, metavar="FILE", help="the job's code")
    describe.add_argument("--lang", metavar="LANGUAGE", help="language (default: from extension)")
    describe.add_argument("--entry-point", metavar="NAME", help="function (default: main)")
    _client_flags(describe, "print the response as JSON")

    cancel = _command(
        commands,
        "cancel",
        "cancel a running job by its id",
        "Cancels a job; when this returns, its processes are gone. Exits 1 if no job with "
        "that id was running.",
        "  gristmill cancel 3f1c0e9a-... --target 127.0.0.1:50051",
    )
    cancel.add_argument("job_id", metavar="JOB_ID", help="the job's id (Outcome.job_id)")
    _client_flags(cancel, "print the response as JSON")

    runtimes = _command(
        commands,
        "runtimes",
        "list the languages a server knows",
        "Lists each language, whether it can run there (and why not), and the sandbox.",
        "  gristmill runtimes\n  gristmill runtimes --target 127.0.0.1:50051 --json",
    )
    _client_flags(runtimes, "print the listing as JSON")

    doctor = _command(
        commands,
        "doctor",
        "check what this host offers the sandbox",
        "Checks user namespaces, seccomp, cgroups, nsjail, the toolchains and which sandbox "
        "backend a server would use.",
        "  gristmill doctor\n  gristmill doctor --json",
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    _server_flags(doctor)

    demo = _command(
        commands,
        "demo",
        "run every runtime's example job",
        "Runs each language's example job (runtimes/<language>/example.*).",
        "  gristmill demo\n  gristmill demo --target embedded --json",
    )
    _client_flags(demo, "print one JSON object per language")

    _add_serve(commands)

    stop = _command(
        commands,
        "stop",
        "stop the local server that commands share",
        "Stops the user's local server for these settings, if it runs.",
        "  gristmill stop",
    )
    stop.add_argument("--json", action="store_true", help="print whether one was stopped")
    _server_flags(stop)

    commands.add_parser(
        "conformance",
        help="the runtime conformance suite (gristmill conformance --help)",
        add_help=False,
    )
    queue_commands.add_commands(commands, _command)
    settings_reference.add_command(commands, _command)
    return parser


_SETTINGS = {"config", "sandbox_backend", "work_dir", "address", "max_concurrent_jobs"}
_SETTINGS |= {"max_queued_jobs", "drain_grace_s"}


def _overrides(options: argparse.Namespace) -> dict[str, Any]:
    return {
        k: v
        for k, v in vars(options).items()
        if (k in _SETTINGS or "." in k) and k != "config" and v is not None
    }


def _config(options: argparse.Namespace) -> ServerConfig:
    return load_config(getattr(options, "config", None), overrides=_overrides(options))


def _serve_flags(options: argparse.Namespace) -> tuple[str, ...]:
    """The `serve` flags that give a local server this command's settings."""
    flags: list[str] = []
    if getattr(options, "config", None):
        flags += ["--config", str(options.config.resolve())]
    if getattr(options, "sandbox_backend", None):
        flags += ["--sandbox", options.sandbox_backend]
    if getattr(options, "work_dir", None):
        flags += ["--work-dir", str(options.work_dir.resolve())]
    return tuple(flags)


def _local(options: argparse.Namespace) -> Any:
    from gristmill.local import LocalServer

    return LocalServer.of(_config(options), _serve_flags(options))


@contextlib.contextmanager
def _server(options: argparse.Namespace) -> Iterator[str]:
    """The address of `--target` (or $GRISTMILL_TARGET), or of the local server, or of an
    embedded one for the command's duration."""
    target = getattr(options, "target", None) or os.environ.get(TARGET_VARIABLE)
    if target and target != EMBEDDED:
        yield target
        return
    if target != EMBEDDED:
        yield _local(options).ensure()
        return
    from gristmill.server import BackgroundServer

    with BackgroundServer(dataclasses.replace(_config(options), address="127.0.0.1:0")) as address:
        yield address


def _client(address: str, options: argparse.Namespace) -> Client:
    """A client that fails fast when no server answers (a person is waiting), retrying
    UNAVAILABLE a few times with backoff rather than waiting for the server to appear."""
    try:
        credentials = credentials_from_options(options)
    except OSError as error:
        raise UsageError(f"credentials: {error}") from error
    return Client(address, retry=RetryPolicy(wait_for_ready=False), credentials=credentials)


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
        source, colon, target = spec.partition(":")
        path = Path(source)
        try:
            files[target if colon else path.name] = path.read_bytes()
        except OSError as error:
            raise UsageError(f"--file {spec}: cannot read {path}: {error.strerror}") from error
    return files


def _language(options: argparse.Namespace) -> str:
    """`--lang`, else the language whose runtime.toml lists the file's extension (read
    directly: loading the registry's plugins would cost a tenth of a second per command)."""
    if options.lang:
        return str(options.lang)
    from gristmill.languages.spec import load_spec

    suffix = options.file.suffix
    for folder in sorted(_config(options).runtimes_dir.iterdir()):
        if (folder / "runtime.toml").is_file():
            spec = load_spec(folder)
            if suffix in spec.extensions:
                return spec.name
    raise UsageError(f"no language for {suffix!r} files: pass --lang")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape
    (`\\x1b`), so that a job cannot drive the terminal: set its title, write the
    clipboard (OSC 52), clear the screen."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found[0]):02x}", text)


def _for(stream: TextIO, text: str) -> str:
    return _visible(text) if stream.isatty() else text


def _write_output(stream: TextIO, data: bytes) -> None:
    if stream.isatty():
        stream.write(_visible(data.decode(errors="replace")))
    else:
        stream.flush()
        stream.buffer.write(data)
    stream.flush()


def _print_verdict(outcome: pb.Outcome) -> None:
    verdict = pb.Verdict.Name(outcome.verdict)
    if outcome.verdict == pb.SUCCESS:
        print(_for(sys.stdout, f"result: {outcome.result_json}"), flush=True)
    else:
        error = f"{outcome.error.name}: {outcome.error.message}" if outcome.error.name else ""
        print(_for(sys.stderr, f"{verdict}: {error or outcome.detail}"), file=sys.stderr)


class _Progress:
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
            self._console = _console(stderr=True)
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


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from error


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from error


class Interrupted(Exception):
    """Ctrl-C during a job: it was cancelled."""


def _stream(client: Client, request: dict[str, Any], live: bool) -> pb.Outcome:
    """The job's Outcome; with `live`, its output written as it comes."""
    progress = _Progress(quiet=not live)
    streamed = {"stdout": False, "stderr": False}
    try:
        for event in client.execute_stream(**request):
            kind = event.WhichOneof("event")
            if kind == "phase":
                progress.show(event.phase)
            elif kind in streamed and live:
                progress.close()
                streamed[kind] = True
                _write_output(sys.stdout if kind == "stdout" else sys.stderr, getattr(event, kind))
            elif kind == "outcome":
                outcome: pb.Outcome = event.outcome
                if live:
                    # A request that joined a finished run gets no output events.
                    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
                        if not streamed[name]:
                            _write_output(stream, getattr(outcome, name).data)
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
    code = _read(options.file)
    lockfile = pb.Lockfile(content=_read(options.lockfile)) if options.lockfile else None
    request = {
        "language": _language(options),
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
    with _server(options) as address, _client(address, options) as client:
        outcome = _stream(client, request, live=not options.json)
    if options.save_lockfile and outcome.HasField("lockfile"):
        _write(options.save_lockfile, outcome.lockfile.content)
    _save_files(outcome, options.output_dir, quiet=options.json)
    if options.json:
        _print_json(to_json(outcome))
    else:
        _print_verdict(outcome)
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
        target = directory / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(returned.content)
        except OSError as error:
            raise UsageError(f"cannot write {target}: {error.strerror}") from error
        if not quiet:
            print(f"wrote {target} ({len(returned.content)} bytes)", file=sys.stderr)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), flush=True)


def _console(stderr: bool = False) -> Console:
    """A console whose tables are never cut to 80 columns when piped."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=1000)
    return console


def _resolve(options: argparse.Namespace) -> int:
    code = _read(options.file)
    language = _language(options)
    with _server(options) as address, _client(address, options) as client:
        response = client.resolve(language, code)
    failed = response.HasField("error")
    if response.HasField("lockfile") and options.output:
        _write(options.output, response.lockfile.content)
    if options.json:
        _print_json(to_json(response))
        return EXIT_JOB_FAILED if failed else EXIT_OK
    from rich.table import Table

    console = _console(stderr=True)
    # A "dependency" named as the language itself is the code's interpreter constraint
    # (PEP 723 `requires-python`): a requirement on the toolchain, not a package.
    packages = [d for d in response.dependencies if d.name != language]
    for toolchain in (d for d in response.dependencies if d.name == language):
        console.print(f"requires {toolchain.requirement} ({toolchain.where})")
    if packages:
        table = Table("dependency", "requirement", "source", "where")
        for dependency in packages:
            source = pb.DependencySource.Name(dependency.source).lower()
            table.add_row(dependency.name, dependency.requirement, source, dependency.where)
        console.print(table)
    elif not failed:
        console.print("no dependencies")
    if failed:
        print(f"DEPENDENCY_ERROR: {response.error.message}", file=sys.stderr)
        return EXIT_JOB_FAILED
    if response.HasField("lockfile") and not options.output:
        sys.stdout.write(response.lockfile.content)
    return EXIT_OK


def _describe(options: argparse.Namespace) -> int:
    code = _read(options.file)
    language = _language(options)
    request = pb.DescribeRequest(
        language=language, code=code, entry_point=options.entry_point or ""
    )
    with _server(options) as address, _client(address, options) as client:
        response: pb.DescribeResponse = client._call("Describe", request, None)
    if options.json:
        _print_json(to_json(response))
    else:
        schema = json.loads(response.parameters_schema_json)
        print(f"{response.entry_point}: {json.dumps(schema, indent=2)}")
    return EXIT_OK


def _cancel(options: argparse.Namespace) -> int:
    with _server(options) as address, _client(address, options) as client:
        cancelled = client.cancel(options.job_id)
    if options.json:
        _print_json(to_json(pb.CancelResponse(cancelled=cancelled)))
    else:
        print(f"{options.job_id}: {'cancelled' if cancelled else 'not running'}")
    return EXIT_OK if cancelled else EXIT_JOB_FAILED


def _runtimes(options: argparse.Namespace) -> int:
    with _server(options) as address, _client(address, options) as client:
        listing = client.list_runtimes()
    if options.json:
        _print_json(to_json(listing))
        return EXIT_OK
    from rich.table import Table

    table = Table("language", "name", "toolchain", "available", "extensions", "entry point")
    for runtime in listing.runtimes:
        available = "yes" if runtime.available else f"no: {runtime.unavailable_reason}"
        table.add_row(
            runtime.language,
            runtime.display_name,
            runtime.toolchain_version,
            available,
            " ".join(runtime.file_extensions),
            runtime.default_entry_point,
        )
    console = _console()
    console.print(table)
    sandbox = listing.sandbox
    console.print(f"sandbox: {sandbox.backend} ({', '.join(sandbox.enforced_limits)})")
    console.print(sandbox.detail)
    caller = listing.caller
    operator = ", operator" if caller.operator else ""
    console.print(
        f"server: gristmill {listing.server_version} (build {listing.server_build}); "
        f"you: tenant {caller.tenant}{operator}, {caller.max_concurrent_jobs} jobs at once, "
        f"{caller.max_queued_jobs} waiting"
    )
    return EXIT_OK


def _example(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """A runtime folder's example job and its arguments, if it has one."""
    example = next(
        (
            path
            for path in sorted(folder.iterdir())
            if path.name.startswith("example") and not path.name.endswith(".args.json")
        ),
        None,
    )
    if example is None:
        return None
    args_file = folder / "example.args.json"
    args = json.loads(args_file.read_text()) if args_file.exists() else {}
    return example, args


def _demo(options: argparse.Namespace) -> int:
    from gristmill.languages import Registry

    config = _config(options)
    registry = Registry(config.runtimes_dir, config.profiles_dir)
    failed = 0
    with _server(options) as address, _client(address, options) as client:
        for runtime in registry:
            found = _example(runtime.spec.folder)
            if not runtime.available or found is None:
                reason = "unavailable" if not runtime.available else "no example"
                if options.json:
                    print(json.dumps({"language": runtime.name, "skipped": reason}))
                else:
                    print(f"{runtime.name:<12} skipped ({reason})")
                continue
            path, args = found
            outcome = client.execute(runtime.name, path.read_text(), args)
            failed += outcome.verdict != pb.SUCCESS
            if options.json:
                print(json.dumps({"language": runtime.name, "outcome": to_json(outcome)}))
                continue
            phases = outcome.usage.phases
            print(
                f"{runtime.name:<12} {pb.Verdict.Name(outcome.verdict):<10}"
                f" result={outcome_result(outcome) if outcome.result_json else outcome.detail}"
                f"  wall={outcome.usage.wall_time_ms}ms setup={phases.sandbox_setup_ms}ms"
                f" run={phases.run_ms}ms"
            )
    return EXIT_JOB_FAILED if failed else EXIT_OK


class _Activity(HandlerWrapper):
    """Counts calls in flight and when the last one ended, for `--idle-exit-s`."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = time.monotonic()

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.last = time.monotonic()

    def around_unary(self, inner: Handler, method: str) -> Handler:
        async def unary(request: Any, context: Any) -> Any:
            with self._call():
                return await inner(request, context)

        return unary

    def around_stream(self, inner: Handler, method: str) -> Handler:
        async def stream(request: Any, context: Any) -> Any:
            with self._call():
                async for reply in inner(request, context):
                    yield reply

        return stream


async def _idle(activity: _Activity, idle_s: float, stopping: asyncio.Event) -> None:
    while not stopping.is_set():
        await asyncio.sleep(min(5.0, idle_s / 4))
        if activity.in_flight == 0 and time.monotonic() - activity.last > idle_s:
            logging.getLogger("gristmill").info("no call for %.0f s: exiting", idle_s)
            stopping.set()


async def _serve_until_signalled(config: ServerConfig, idle_exit_s: float | None) -> None:
    from gristmill.server import start

    activity = _Activity()
    server = await start(config, interceptors=[activity])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def signalled() -> None:
        # The first signal drains; a second one cuts the drain's grace short.
        if stopping.is_set():
            server.hurry()
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, signalled)
    idle = asyncio.ensure_future(_idle(activity, idle_exit_s, stopping)) if idle_exit_s else None
    await stopping.wait()
    if idle is not None:
        idle.cancel()
    await server.stop()


def _remove_socket(address: str) -> None:
    if address.startswith("unix:"):
        Path(address.removeprefix("unix:")).unlink(missing_ok=True)


def _check_address(address: str) -> None:
    """One clear line, before anything starts, when the address is taken."""
    if address.startswith("unix:"):
        path = Path(address.removeprefix("unix:"))
        if path.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # a dead server's socket
                    return
            raise UsageError(f"cannot listen on {address}: a server is already listening there")
        return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot listen on {address}: {error}") from error
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as error:
            why = "the address is in use (another server?)" if error.errno == 98 else error.strerror
            raise UsageError(
                f"cannot listen on {address}: {why}; choose another with --address"
            ) from None


def _serve(options: argparse.Namespace) -> int:
    config = _config(options)
    _check_address(config.address)
    from gristmill.observability import logs

    logs.configure(config.telemetry)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(config, options.idle_exit_s))
    _remove_socket(config.address)
    return EXIT_OK


def _stop(options: argparse.Namespace) -> int:
    stopped = bool(_local(options).stop())
    if options.json:
        _print_json({"stopped": stopped})
    else:
        print("stopped the local server" if stopped else "no local server was running")
    return EXIT_OK


def _doctor(options: argparse.Namespace) -> int:
    from gristmill import doctor

    config = _config(options)
    if not options.json:
        return doctor.main(config, _console())
    checks = doctor.run_checks(config)
    _print_json(
        {"checks": [{"name": c.name, "status": c.status.name, "detail": c.detail} for c in checks]}
    )
    return EXIT_JOB_FAILED if any(c.status is doctor.Status.FAIL for c in checks) else EXIT_OK


def _hint(error: grpc.RpcError) -> str:
    details = error.details() or ""
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT and "limits.network" in details:
        return NETWORK_HINT
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        return "give a token (--token-file, $GRISTMILL_TOKEN) or a client certificate (--tls-cert)"
    if too_large(error):
        return (
            "a message was over a gRPC size limit (the server is not full): retrying will not help"
        )
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return "is the server running? (--target, $GRISTMILL_TARGET)"
    return ""


def _fail(json_mode: bool, code: str, message: str, hint: str = "") -> int:
    if json_mode:
        _print_json(failure(code, message, hint))
    else:
        print(f"gristmill: {message}", file=sys.stderr)
        if hint:
            print(f"gristmill: hint: {hint}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["conformance"]:
        from gristmill.conformance.runner import main as conformance_main

        return int(conformance_main(argv[1:]))
    # `run FILE --script -- ARG...`: what follows `--` is the script's, options or not.
    script_argv: list[str] = []
    if argv[:1] == ["run"] and "--" in argv:
        argv, script_argv = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    options = _build_parser().parse_args(argv)
    if script_argv:
        options.argv = [*options.argv, *script_argv]
    json_mode = bool(getattr(options, "json", False))
    commands = {
        "serve": _serve,
        "run": _run,
        "resolve": _resolve,
        "describe": _describe,
        "cancel": _cancel,
        "runtimes": _runtimes,
        "doctor": _doctor,
        "demo": _demo,
        "stop": _stop,
        **queue_commands.COMMANDS,
        "config": settings_reference.run,
    }
    try:
        return commands[options.command](options)
    except Interrupted as interrupted:
        if json_mode:
            _print_json(failure("CANCELLED", f"interrupted: job {interrupted} cancelled"))
        else:
            print(f"\ngristmill: interrupted: job {interrupted} cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ngristmill: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as error:
        return _fail(json_mode, "USAGE", str(error))
    except GristmillError as error:
        return _fail(json_mode, type(error).__name__, str(error))
    except grpc.RpcError as error:
        return _fail(json_mode, error.code().name, error.details() or "", _hint(error))


if __name__ == "__main__":
    sys.exit(main())
