"""The README and docs/ stay usable: links lead somewhere, the README stays short, every
`gristmill COMMAND` they show is a command the installed CLI has, and every name their
Python examples import exists."""

from __future__ import annotations

import functools
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted([README, *(ROOT / "docs").glob("*.md"), *(ROOT / "runtimes").glob("*/README.md")])
README_MAX_LINES = 450

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
COMMAND = re.compile(
    r"(?:^[ \t]*(?:\$[ \t]+)?|&&[ \t]*|\|[ \t]*|;[ \t]*|\$\([ \t]*)(?:\S*/)?"
    r"gristmill ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?",
    re.M,
)
"""A command where a shell would read one: a line's (or a code span's) start, after `$ `,
`&&`, `|`, `;` or `$(`, the program perhaps by path (`.venv/bin/gristmill`)."""


def prose(text: str) -> str:
    """The page without its fenced code blocks: headings and links there are not real."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """Every anchor a page has, numbered as GitHub numbers repeated headings."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in HEADING.finditer(prose(page.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(page.read_text(encoding="utf-8")))
    return [*LINK.findall(text), *REFERENCE.findall(text)]


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file {shown(dest)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {shown(dest)}")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_readme_links_every_docs_page() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in links(README)
        if not EXTERNAL.match(target)
    }
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert unlinked == []


def gristmill_command() -> list[str]:
    """The installed `gristmill` beside this interpreter, else the package run as a module."""
    script = Path(sys.executable).with_name("gristmill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gristmill"]


@functools.cache
def usage(*words: str) -> str | None:
    """The usage `gristmill WORDS --help` prints, on one line, or None when WORDS is no command."""
    result = subprocess.run(
        [*gristmill_command(), *words, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        return None
    block = " ".join(result.stdout.split("\n\n", 1)[0].split())  # usage may wrap
    return block if block.startswith("usage: gristmill " + " ".join(words)) else None


def named_commands(text: str) -> set[tuple[str, str | None]]:
    """`gristmill WORD [WORD]` in a page's code blocks and code spans, at a command's place."""
    code = [block.group(0) for block in FENCE.finditer(text)]
    code += [span.group(2) for span in INLINE_CODE.finditer(prose(text))]
    return {(m.group(1), m.group(2)) for chunk in code for m in COMMAND.finditer(chunk)}


def unknown_commands(page: Path) -> list[str]:
    unknown = []
    for command, word in sorted(named_commands(page.read_text(encoding="utf-8")), key=str):
        line = usage(command)
        if line is None:
            unknown.append(f"gristmill {command}")
            continue
        choices = re.search(r"\{([a-z,-]+)\} \.\.\.", line)  # sub-commands: `{a,b} ...`
        if choices and word is not None and word not in choices.group(1).split(","):
            unknown.append(f"gristmill {command} {word}")
    return unknown


def test_named_commands_are_found_in_readme_code() -> None:
    """The extraction itself: a check that finds nothing would pass whatever the README says."""
    found = named_commands(README.read_text(encoding="utf-8"))
    assert {command for command, _ in found} >= {"run", "serve", "worker", "enqueue", "queue"}


@pytest.mark.parametrize(
    "page",
    [README, *sorted((ROOT / "docs").glob("*.md"))],
    ids=lambda page: str(page.relative_to(ROOT)),
)
def test_every_command_named_is_a_real_subcommand(page: Path) -> None:
    assert unknown_commands(page) == []


def test_an_unknown_command_is_caught(tmp_path: Path) -> None:
    """The check fails on a command the CLI does not have (and on a wrong sub-command)."""
    page = tmp_path / "unknown.md"
    page.write_text("Run `gristmill frobnicate` or `gristmill queue explode`.\n")
    assert unknown_commands(page) == ["gristmill frobnicate", "gristmill queue explode"]


def test_a_broken_link_and_anchor_are_caught(tmp_path: Path) -> None:
    page = ROOT / "docs" / "architecture.md"
    probe = tmp_path / "probe.md"
    probe.write_text(
        f"# Probe\n\n[ok]({page}#architecture) [no file](missing.md) "
        f"[no heading]({page}#no-such-heading) [self](#probe) [gone](#gone)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert [line.split(": ")[0] for line in broken_links(probe)] == [
        "missing.md",
        f"{page}#no-such-heading",
        "#gone",
    ]


IMPORT = re.compile(r"^from (gristmill[\w.]*) import ([\w, ]+)$", re.M)


def python_imports(page: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from gristmill... import ...` in a page's Python examples."""
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)
    return [
        (module, name.strip())
        for block in blocks
        for module, names in IMPORT.findall(block)
        for name in names.split(",")
    ]


@pytest.mark.parametrize(
    "page",
    [README, *sorted((ROOT / "docs").glob("*.md"))],
    ids=lambda page: str(page.relative_to(ROOT)),
)
def test_every_import_in_an_example_works(page: Path) -> None:
    """An example whose names moved would fail at its first line for whoever copies it."""
    missing = [
        f"{module}.{name}"
        for module, name in python_imports(page)
        if not hasattr(importlib.import_module(module), name)
    ]
    assert missing == []


def test_imports_are_found_in_examples() -> None:
    assert ("gristmill.client", "Verdict") in python_imports(README)
