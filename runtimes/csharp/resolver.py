"""C#'s dependencies: `#r "nuget: Name, Version"` lines, locked and installed by our own
NuGet v3 client (`nuget.py`) in the resolve sandbox.

The client is a standard-library Python script run by Debian's /usr/bin/python3, which
every sandbox has in /usr: it travels as a file of each step, so the resolver has no
host program to copy (`programs` is empty). The feed is the service's `deps.index_url`
(a NuGet v3 service index), else nuget.org's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from gristmill.languages import (
    Dependency,
    DependencyFailure,
    DependencySource,
    Lockfile,
    LockfileRefused,
    Step,
    ToolContext,
    json_line,
)

from . import nuget

CLIENT = Path(__file__).with_name("nuget.py")
DEFAULT_FEED = "https://api.nuget.org/v3/index.json"
INTERPRETER = ("/usr/bin/python3", "-I", "-S", "-B")
LOCK_FORMAT = "gristmill-nuget-lock.json"
REQUIREMENTS = "requirements.jsonl"
LOCKFILE = "packages.lock.json"

# `#r "nuget: Name, Version"` (the version, or range, may be left out): dotnet-script's form.
REFERENCE = re.compile(r'^\s*#r\s+"nuget:\s*(?P<body>[^"]*)"\s*$')


def find(code: str) -> tuple[Dependency, ...]:
    """The packages `code` references, in order of appearance, each once."""
    found: dict[str, Dependency] = {}
    for number, line in enumerate(code.splitlines(), start=1):
        match = REFERENCE.match(line)
        if match is None:
            continue
        name, _, version = (part.strip() for part in match["body"].partition(","))
        where = f"#r, line {number}"
        if not nuget.ID.fullmatch(name):
            raise DependencyFailure(f"{where}: {name!r} is not a NuGet package id")
        try:
            nuget.Range(version)
        except nuget.Failure as refused:
            raise DependencyFailure(f"{where}: {refused}") from refused
        requirement = f"{name}, {version}" if version else name
        found.setdefault(
            name.lower(), Dependency(name, requirement, DependencySource.DECLARED, where)
        )
    return tuple(found.values())


def _feed(context: ToolContext) -> str:
    return context.index_urls[0] if context.index_urls else DEFAULT_FEED


def _packages(content: str, feed_url: str | None) -> list[dict[str, str]]:
    """`nuget.read_lockfile`, its refusal naming the line (`LockfileRefused`)."""
    try:
        return nuget.read_lockfile(content, feed_url)
    except nuget.Failure as refused:
        if not refused.where:
            raise LockfileRefused(str(refused)) from None
        number, text = json_line(content, refused.where)
        raise LockfileRefused.at(number, text, f"is refused: {refused}") from None


class NuGet:
    name: str = "nuget"
    lock_format: str = LOCK_FORMAT
    programs: tuple[str, ...] = ()

    def check_lockfile(self, content: str) -> None:
        """A caller's lockfile: only exact package versions with their SHA-512. (Which
        feed it was made from is checked by the install step against the service's.)"""
        _packages(content, None)

    def version_argv(self, program_path: str) -> Sequence[str]:
        return (*INTERPRETER, str(CLIENT), "--version")

    def lock(self, dependencies: Sequence[Dependency], context: ToolContext) -> Step:
        lines = []
        for dependency in dependencies:
            version = dependency.requirement.partition(",")[2].strip()
            lines.append(json.dumps([dependency.name, version]) + "\n")
        return Step(
            argv=(*INTERPRETER, "nuget.py", "lock", _feed(context), REQUIREMENTS),
            files={"nuget.py": CLIENT.read_text(), REQUIREMENTS: "".join(lines)},
            stdout_is_result=True,
        )

    def install(self, lockfile: Lockfile, context: ToolContext) -> Step:
        try:
            packages = _packages(lockfile.content, _feed(context))
        except LockfileRefused as refused:
            raise DependencyFailure(f"the lockfile: {refused}") from refused
        # The checked entries, re-rendered: nothing of the caller's text beyond them.
        clean = {"version": nuget.LOCK_VERSION, "feed": _feed(context), "packages": packages}
        argv = (*INTERPRETER, "nuget.py", "install", _feed(context), LOCKFILE)
        return Step(
            argv=(*argv, context.build_dir, context.cache_dir),
            files={"nuget.py": CLIENT.read_text(), LOCKFILE: json.dumps(clean)},
        )
