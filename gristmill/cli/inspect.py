"""`gristmill resolve`, `describe` and `runtimes`: what a server makes of a file, without
running it, and what it can run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gristmill import render
from gristmill.cli import target
from gristmill.cli.base import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    Room,
    Subcommands,
    command,
    read_text,
    write_text,
)
from gristmill.jsonview import to_json
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["ROOM"]


def _add(commands: Subcommands) -> None:
    resolve = command(
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
    target.client_flags(resolve, "print the response as JSON")

    describe = command(
        commands,
        "describe",
        "print a file's entry point parameters as a JSON Schema",
        "Parses FILE (without running it) and prints its entry point's parameters.",
        "  gristmill describe job.py\n  gristmill describe job.py --entry-point handler --json",
    )
    describe.add_argument("file", type=Path, metavar="FILE", help="the job's code")
    describe.add_argument("--lang", metavar="LANGUAGE", help="language (default: from extension)")
    describe.add_argument("--entry-point", metavar="NAME", help="function (default: main)")
    target.client_flags(describe, "print the response as JSON")

    runtimes = command(
        commands,
        "runtimes",
        "list the languages a server knows",
        "Lists each language, whether it can run there (and why not), and the sandbox.",
        "  gristmill runtimes\n  gristmill runtimes --target 127.0.0.1:50051 --json",
    )
    target.client_flags(runtimes, "print the listing as JSON")


def _resolve(options: argparse.Namespace) -> int:
    code = read_text(options.file)
    language = target.language(options)
    with target.server(options) as address, target.client(address, options) as client:
        response = client.resolve(language, code)
    failed = response.HasField("error")
    if response.HasField("lockfile") and options.output:
        write_text(options.output, response.lockfile.content)
    if options.json:
        render.print_json(to_json(response))
        return EXIT_JOB_FAILED if failed else EXIT_OK
    from rich.table import Table

    console = render.console(stderr=True)
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
    code = read_text(options.file)
    language = target.language(options)
    request = pb.DescribeRequest(
        language=language, code=code, entry_point=options.entry_point or ""
    )
    with target.server(options) as address, target.client(address, options) as client:
        response: pb.DescribeResponse = client._call("Describe", request, None)
    if options.json:
        render.print_json(to_json(response))
    else:
        schema = json.loads(response.parameters_schema_json)
        print(f"{response.entry_point}: {json.dumps(schema, indent=2)}")
    return EXIT_OK


def _runtimes(options: argparse.Namespace) -> int:
    with target.server(options) as address, target.client(address, options) as client:
        listing = client.list_runtimes()
    if options.json:
        render.print_json(to_json(listing))
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
    console = render.console()
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


ROOM = Room(
    add=_add,
    commands={"resolve": _resolve, "describe": _describe, "runtimes": _runtimes},
)
