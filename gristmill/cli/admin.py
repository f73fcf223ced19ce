"""`gristmill doctor`, `demo`, `stop` and `config`: the host, the runtimes' examples, the
local server, and the settings' reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gristmill import render, settings_reference
from gristmill.cli import target
from gristmill.cli.base import EXIT_JOB_FAILED, EXIT_OK, Room, Subcommands, command
from gristmill.client import outcome_result
from gristmill.jsonview import to_json
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["ROOM"]


def _add(commands: Subcommands) -> None:
    doctor = command(
        commands,
        "doctor",
        "check what this host offers the sandbox",
        "Checks user namespaces, seccomp, cgroups, nsjail, the toolchains and which sandbox "
        "backend a server would use.",
        "  gristmill doctor\n  gristmill doctor --json",
    )
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    target.server_flags(doctor)

    demo = command(
        commands,
        "demo",
        "run every runtime's example job",
        "Runs each language's example job (runtimes/<language>/example.*).",
        "  gristmill demo\n  gristmill demo --target embedded --json",
    )
    target.client_flags(demo, "print one JSON object per language")

    stop = command(
        commands,
        "stop",
        "stop the local server that commands share",
        "Stops the user's local server for these settings, if it runs.",
        "  gristmill stop",
    )
    stop.add_argument("--json", action="store_true", help="print whether one was stopped")
    target.server_flags(stop)

    settings_reference.add_command(commands, command)


def _doctor(options: argparse.Namespace) -> int:
    from gristmill import doctor

    config = target.config(options)
    if not options.json:
        return doctor.main(config, render.console())
    checks = doctor.run_checks(config)
    render.print_json(
        {"checks": [{"name": c.name, "status": c.status.name, "detail": c.detail} for c in checks]}
    )
    return EXIT_JOB_FAILED if any(c.status is doctor.Status.FAIL for c in checks) else EXIT_OK


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

    config = target.config(options)
    registry = Registry(config.runtimes_dir, config.profiles_dir)
    failed = 0
    with target.server(options) as address, target.client(address, options) as client:
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


def _stop(options: argparse.Namespace) -> int:
    stopped = bool(target.local(options).stop())
    if options.json:
        render.print_json({"stopped": stopped})
    else:
        print("stopped the local server" if stopped else "no local server was running")
    return EXIT_OK


ROOM = Room(
    add=_add,
    commands={
        "doctor": _doctor,
        "demo": _demo,
        "stop": _stop,
        "config": settings_reference.run,
    },
)
