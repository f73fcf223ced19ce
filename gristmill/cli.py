"""The `gristmill` command: serve, run or resolve a file, list runtimes, check the host, demo,
conformance.

Commands that talk to a server use `--target HOST:PORT`, or without it an embedded
server in this process (`BackgroundServer`), so one file can be run with no set-up.
Exit status: 0 when the job succeeded, 1 for any other verdict (or failed checks),
2 for a usage error or a failed call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from gristmill import __version__
from gristmill.client import Client, outcome_result
from gristmill.config import ServerConfig, load_config
from gristmill.errors import GristmillError
from gristmill.languages import Registry
from gristmill.queue import cli as queue_commands
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["main"]

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE = 0, 1, 2
MiB = 1024 * 1024


class UsageError(Exception):
    """The command line cannot be carried out as given."""


def _server_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that set `ServerConfig` values; each `dest` is the setting's flat key."""
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--sandbox", dest="sandbox_backend", choices=["process", "nsjail"])
    parser.add_argument("--work-dir", dest="work_dir", type=Path)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gristmill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    _server_flags(serve)
    serve.add_argument("--address")
    serve.add_argument("--concurrency", dest="max_concurrent_jobs", type=int)
    serve.add_argument("--queue", dest="max_queued_jobs", type=int)
    serve.add_argument("--default-timeout-ms", dest="default_limits.wall_time_ms", type=int)
    serve.add_argument("--default-memory-bytes", dest="default_limits.memory_bytes", type=int)
    serve.add_argument("--max-timeout-ms", dest="max_limits.wall_time_ms", type=int)
    serve.add_argument("--max-memory-bytes", dest="max_limits.memory_bytes", type=int)
    serve.add_argument("--max-processes", dest="max_limits.processes", type=int)
    serve.add_argument("--max-output-bytes", dest="max_limits.output_bytes", type=int)
    serve.add_argument(
        "--allow-network", dest="max_limits.network", action="store_true", default=None
    )

    run = commands.add_parser("run", help="run one file as a job and print its outcome")
    _server_flags(run)
    run.add_argument("file", type=Path)
    run.add_argument("--lang", help="language (default: from the file's extension)")
    run.add_argument("--args", dest="args_json", help="arguments as a JSON object")
    run.add_argument(
        "--arg", action="append", default=[], metavar="K=V", help="one argument (V as JSON)"
    )
    run.add_argument("--entry-point")
    run.add_argument("--timeout-ms", type=int, default=0)
    run.add_argument("--memory-mb", type=int, default=0)
    run.add_argument("--network", action="store_true")
    run.add_argument("--target", help="HOST:PORT of a server (default: embedded)")
    run.add_argument("--json", action="store_true", help="print the Outcome as JSON")
    run.add_argument(
        "--lockfile", type=Path, help="install exactly this lockfile (never resolve again)"
    )
    run.add_argument(
        "--save-lockfile", type=Path, metavar="PATH", help="write the lockfile the job used"
    )

    resolve = commands.add_parser(
        "resolve", help="find a file's dependencies and print their lockfile, without running it"
    )
    _server_flags(resolve)
    resolve.add_argument("file", type=Path)
    resolve.add_argument("--lang", help="language (default: from the file's extension)")
    resolve.add_argument("--target", help="HOST:PORT of a server (default: embedded)")
    resolve.add_argument("--json", action="store_true", help="print the response as JSON")
    resolve.add_argument(
        "-o", "--output", type=Path, help="write the lockfile here instead of to stdout"
    )

    runtimes = commands.add_parser("runtimes", help="list the languages a server knows")
    _server_flags(runtimes)
    runtimes.add_argument("--target")

    doctor = commands.add_parser("doctor", help="check what this host offers the sandbox")
    _server_flags(doctor)

    demo = commands.add_parser("demo", help="run every runtime's example job")
    _server_flags(demo)

    commands.add_parser("conformance", help="the runtime conformance suite", add_help=False)
    queue_commands.add_commands(commands)
    return parser


_NOT_SETTINGS = {"command", "config", "file", "lang", "args_json", "arg", "entry_point"}
_NOT_SETTINGS |= {"timeout_ms", "memory_mb", "network", "target", "json"}
_NOT_SETTINGS |= {"lockfile", "save_lockfile", "output"}


def _config(options: argparse.Namespace) -> ServerConfig:
    overrides = {k: v for k, v in vars(options).items() if k not in _NOT_SETTINGS}
    return load_config(options.config, overrides=overrides)


@contextlib.contextmanager
def _server(options: argparse.Namespace, config: ServerConfig) -> Iterator[str]:
    """The address of `--target`, or of an embedded server for the command's duration."""
    if getattr(options, "target", None):
        yield options.target
        return
    from gristmill.server import BackgroundServer

    with BackgroundServer(dataclasses.replace(config, address="127.0.0.1:0")) as address:
        yield address


def _parse_args(options: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if options.args_json:
        try:
            args = json.loads(options.args_json)
        except json.JSONDecodeError as error:
            raise UsageError(f"--args is not JSON: {error}") from error
        if not isinstance(args, dict):
            raise UsageError("--args must be a JSON object")
    for pair in options.arg:
        name, equals, text = pair.partition("=")
        if not equals:
            raise UsageError(f"--arg {pair!r}: expected NAME=VALUE")
        try:
            args[name] = json.loads(text)
        except json.JSONDecodeError:
            args[name] = text
    return args


def _language(options: argparse.Namespace, config: ServerConfig) -> str:
    if options.lang:
        return str(options.lang)
    runtime = Registry(config.runtimes_dir, config.profiles_dir).for_extension(options.file.suffix)
    if runtime is None:
        raise UsageError(f"no language for {options.file.suffix!r} files: pass --lang")
    return runtime.name


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    """`text` with every control character but newline and tab shown as an escape
    (`\x1b`), so that a job cannot drive the terminal: set its title, write the
    clipboard (OSC 52), clear the screen."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found[0]):02x}", text)


def _for(stream: TextIO, text: str) -> str:
    return _visible(text) if stream.isatty() else text


def _write_output(stream: TextIO, data: bytes) -> None:
    if stream.isatty():
        stream.write(_visible(data.decode(errors="replace")))
    else:
        stream.buffer.write(data)


def _print_outcome(outcome: pb.Outcome) -> None:
    _write_output(sys.stdout, outcome.stdout.data)
    _write_output(sys.stderr, outcome.stderr.data)
    sys.stdout.flush()
    verdict = pb.Verdict.Name(outcome.verdict)
    if outcome.verdict == pb.SUCCESS:
        print(_for(sys.stdout, f"result: {outcome.result_json}"))
    else:
        error = f"{outcome.error.name}: {outcome.error.message}" if outcome.error.name else ""
        print(_for(sys.stderr, f"{verdict}: {error or outcome.detail}"), file=sys.stderr)


class _Progress:
    """Shows what a job's dependency phases are doing, from its stream's `phase` events:
    on a terminal each phase as a line and its progress on a spinner, else plain lines."""

    SHOWN = ("resolve", "install")

    def __init__(self) -> None:
        self._console = Console(stderr=True, highlight=False)
        self._status: Status | None = None
        self._phase = ""

    def show(self, phase: pb.Phase) -> None:
        if phase.name not in self.SHOWN:
            self.close()
            return
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


def _execute_with_progress(client: Client, request: dict[str, Any]) -> pb.Outcome:
    progress = _Progress()
    try:
        for event in client.execute_stream(**request):
            if event.HasField("phase"):
                progress.show(event.phase)
            elif event.HasField("outcome"):
                return event.outcome
    finally:
        progress.close()
    raise UsageError("the server ended the stream without an outcome")


def _run(options: argparse.Namespace) -> int:
    config = _config(options)
    code = _read(options.file)
    lockfile = pb.Lockfile(content=_read(options.lockfile)) if options.lockfile else None
    request = {
        "language": _language(options, config),
        "code": code,
        "args": _parse_args(options),
        "entry_point": options.entry_point,
        "limits": pb.Limits(
            wall_time_ms=options.timeout_ms,
            memory_bytes=options.memory_mb * MiB,
            network=options.network,
        ),
        "lockfile": lockfile,
    }
    with _server(options, config) as address, Client(address) as client:
        outcome = _execute_with_progress(client, request)
    if options.save_lockfile and outcome.HasField("lockfile"):
        _write(options.save_lockfile, outcome.lockfile.content)
    if options.json:
        print(json_format.MessageToJson(outcome))
    else:
        _print_outcome(outcome)
    return EXIT_OK if outcome.verdict == pb.SUCCESS else EXIT_JOB_FAILED


def _resolve(options: argparse.Namespace) -> int:
    config = _config(options)
    code = _read(options.file)
    with _server(options, config) as address, Client(address) as client:
        response = client.resolve(_language(options, config), code)
    if options.json:
        print(json_format.MessageToJson(response))
        return EXIT_JOB_FAILED if response.HasField("error") else EXIT_OK
    console = Console(stderr=True, highlight=False)
    table = Table("dependency", "requirement", "source", "where")
    for dependency in response.dependencies:
        source = pb.DependencySource.Name(dependency.source).lower()
        table.add_row(dependency.name, dependency.requirement, source, dependency.where)
    console.print(table if response.dependencies else "no dependencies")
    if response.HasField("error"):
        print(f"DEPENDENCY_ERROR: {response.error.message}", file=sys.stderr)
        return EXIT_JOB_FAILED
    if response.HasField("lockfile"):
        if options.output:
            _write(options.output, response.lockfile.content)
        else:
            sys.stdout.write(response.lockfile.content)
    return EXIT_OK


def _runtimes(options: argparse.Namespace) -> int:
    with _server(options, _config(options)) as address, Client(address) as client:
        listing = client.list_runtimes()
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
    console = Console()
    console.print(table)
    sandbox = listing.sandbox
    console.print(f"sandbox: {sandbox.backend} ({', '.join(sandbox.enforced_limits)})")
    console.print(sandbox.detail)
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
    config = _config(options)
    registry = Registry(config.runtimes_dir, config.profiles_dir)
    failed = 0
    with _server(options, config) as address, Client(address) as client:
        for runtime in registry:
            found = _example(runtime.spec.folder)
            if not runtime.available or found is None:
                reason = "unavailable" if not runtime.available else "no example"
                print(f"{runtime.name:<12} skipped ({reason})")
                continue
            path, args = found
            outcome = client.execute(runtime.name, path.read_text(), args)
            phases = outcome.usage.phases
            print(
                f"{runtime.name:<12} {pb.Verdict.Name(outcome.verdict):<10}"
                f" result={outcome_result(outcome) if outcome.result_json else outcome.detail}"
                f"  wall={outcome.usage.wall_time_ms}ms setup={phases.sandbox_setup_ms}ms"
                f" run={phases.run_ms}ms"
            )
            failed += outcome.verdict != pb.SUCCESS
    return EXIT_JOB_FAILED if failed else EXIT_OK


async def _serve_until_signalled(config: ServerConfig) -> None:
    from gristmill.server import start

    server = await start(config)
    logging.getLogger("gristmill").info("serving on %s", server.address)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop()


def _serve(options: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve_until_signalled(_config(options)))
    return EXIT_OK


def _doctor(options: argparse.Namespace) -> int:
    from gristmill import doctor

    return doctor.main(_config(options))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["conformance"]:
        from gristmill.conformance.runner import main as conformance_main

        return int(conformance_main(argv[1:]))
    options = _build_parser().parse_args(argv)
    commands = {
        "serve": _serve,
        "run": _run,
        "resolve": _resolve,
        "runtimes": _runtimes,
        "doctor": _doctor,
        "demo": _demo,
        **queue_commands.COMMANDS,
    }
    try:
        return commands[options.command](options)
    except (UsageError, GristmillError) as error:
        print(f"gristmill: {error}", file=sys.stderr)
    except grpc.RpcError as error:
        print(f"gristmill: {error.code().name}: {error.details()}", file=sys.stderr)
    return EXIT_USAGE
