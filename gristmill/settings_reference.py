"""Every server setting, described from its declaration: `gristmill config`.

Lists the settings of `ServerConfig` as `config_schema.leaves` finds them, so a setting
added to gristmill/config.py appears here with nothing to list by hand: its type, default,
meaning and environment variable all from its one `setting(...)`. Prints the effective
settings (secrets masked), a Markdown reference, or a sample TOML file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gristmill.config import ServerConfig, load_config
from gristmill.config_schema import NAME, leaves

__all__ = [
    "Setting",
    "add_command",
    "is_secret",
    "reference_markdown",
    "run",
    "settings",
    "to_toml",
]

# Settings whose value is a credential: never printed.
_SECRET = re.compile(r"(dsn|password|secret|tokens?)$")
MASK = "********"


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key.rsplit(".", 1)[-1]))


@dataclass(frozen=True)
class Setting:
    """One setting: its flat key, and what the reference says about it."""

    key: str
    kind: str
    value: Any
    meaning: str
    # The largest value a request may ask for (the `default_limits.*` against `max_limits`).
    maximum: Any = None
    env: str | None = None

    @property
    def shown(self) -> Any:
        """The value as it may be printed: a secret that is set is masked."""
        return MASK if is_secret(self.key) and self.value else self.value


def _kind_name(hint: Any) -> str:
    if hint is type(None):
        return "none"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in typing.get_args(hint))
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [_kind_name(a) for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        return " | ".join(kinds) + (" (optional)" if optional else "")
    if hint is Path:
        return "path"
    return getattr(hint, "__name__", str(hint))


def _valued(value: Any, parts: Sequence[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) of one setting in `value`, once per name of each table of names."""
    if not parts:
        yield prefix.rstrip("."), value
        return
    part, rest = parts[0], parts[1:]
    if part == NAME:
        for name, entry in value.items():
            yield from _valued(entry, rest, f"{prefix}{name}.")
    elif isinstance(value, Mapping):
        yield from _valued(value.get(part), rest, f"{prefix}{part}.")
    else:
        yield from _valued(getattr(value, part), rest, f"{prefix}{part}.")


def settings(config: ServerConfig | None = None) -> list[Setting]:
    """Every setting, valued as in `config`; when None, the defaults, with each table of
    names (`databases.<name>`) shown once as `<name>` with its defaults."""
    effective = config or ServerConfig()
    maxima = {f"default_limits.{k}": v for k, v in vars(effective.max_limits).items()}
    found: list[Setting] = []
    for leaf in leaves(ServerConfig):
        valued = [(leaf.key, leaf.default)] if config is None else _valued(config, leaf.parts())
        for key, value in valued:
            kind = _kind_name(leaf.kind)
            found.append(Setting(key, kind, value, leaf.description, maxima.get(key), leaf.env))
    return found


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(entries: Sequence[Setting], sample: bool = False) -> str:
    """`entries` as a TOML file, one table per key prefix; an unset (automatic) setting is
    a comment. `sample`: every setting commented out at its default, with its meaning and
    variable above it, so that the file changes nothing until a line is uncommented."""
    tables: dict[str, list[Setting]] = {}
    for entry in entries:
        table = entry.key.rsplit(".", 1)[0] if "." in entry.key else ""
        tables.setdefault(table, []).append(entry)
    out: list[str] = []
    for table, members in tables.items():
        # A table of names (`databases.<name>`) is only an example in a sample.
        off = "# " if sample and NAME in table else ""
        if table:
            out.append(f"\n{off}[{table}]")
        for entry in members:
            name = entry.key.rsplit(".", 1)[-1]
            if sample:
                out.extend(f"# {line}" for line in textwrap.wrap(entry.meaning, 86))
                if entry.env:
                    out.append(f"# (environment: {entry.env})")
            if entry.shown is None:
                out.append(f"# {name} = (unset: automatic)")
            else:
                out.append(f"{'# ' if sample else ''}{name} = {_toml_value(entry.shown)}")
            if sample:
                out.append("")
    return "\n".join(out).strip() + "\n"


def reference_markdown(entries: Sequence[Setting]) -> str:
    """The settings reference: one row per setting."""
    rows = [
        "| setting | type | default | maximum | environment variable | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for entry in entries:
        default = "(automatic)" if entry.value is None else f"`{_toml_value(entry.shown)}`"
        maximum = "" if entry.maximum is None else f"`{_toml_value(entry.maximum)}`"
        env = f"`{entry.env}`" if entry.env else "(file only)"
        meaning = entry.meaning.replace("|", "\\|")
        rows.append(f"| `{entry.key}` | {entry.kind} | {default} | {maximum} | {env} | {meaning} |")
    return "\n".join(rows) + "\n"


def add_command(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """`gristmill config`, made with the CLI's own command factory."""
    parser = command(
        commands,
        "config",
        "print the effective settings, or every setting's reference",
        "Prints the settings a server started here would use (from the TOML file, then "
        "GRISTMILL_* variables), secrets masked; or every setting's reference.",
        "  gristmill config --config /etc/gristmill/gristmill.toml\n"
        "  gristmill config --reference > settings.md\n"
        "  gristmill config --sample > gristmill.toml",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file ($GRISTMILL_CONFIG)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="the effective settings as JSON")
    shown.add_argument("--reference", action="store_true", help="every setting, as Markdown")
    shown.add_argument("--sample", action="store_true", help="a commented sample TOML file")


def run(options: argparse.Namespace) -> int:
    """`gristmill config`: the effective settings, the reference, or a sample file.
    A malformed setting is a ConfigError, which the CLI reports."""
    if options.reference or options.sample:
        entries = settings()
        text = reference_markdown(entries) if options.reference else to_toml(entries, True)
        sys.stdout.write(text)
        return 0
    entries = settings(load_config(options.config))
    if options.json:
        print(json.dumps({e.key: e.shown for e in entries}, indent=2, default=str))
    else:
        sys.stdout.write(to_toml(entries))
    return 0
