"""Every server setting, described from where it is defined: `gristmill config`.

Walks `ServerConfig` and the tables it holds (dataclasses, and `<name>` tables of a
mapping), so a setting added to gristmill/config.py appears here with nothing to list by
hand: its type from the annotation, its default from the dataclass, its meaning from the
comment above the field (else the table's docstring), its environment variable when the
environment can set it. Prints the effective settings (secrets masked), a Markdown
reference, or a sample TOML file.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
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

from gristmill import config as config_module
from gristmill.config import ServerConfig, load_config

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
# How a named table's name is shown in the reference (`databases.<name>.dsn`).
NAME = "<name>"


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


@functools.cache
def _comments(cls: type) -> dict[str, tuple[str, bool]]:
    """The comment above each field of dataclass `cls`, by field name, and whether it is
    the field's own: fields right below another share its comment (`wall_time_ms`, ...)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    found: dict[str, tuple[str, bool]] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above: list[str] = []
            row = node.lineno - 2
            while row >= 0 and lines[row].strip() and not lines[row].strip().startswith("#"):
                row -= 1
            own = row == node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#"):
                above.insert(0, lines[row].strip().lstrip("#").strip())
                row -= 1
            found[node.target.id] = (" ".join(above), own)
    return found


def _summary(cls: type) -> str:
    """The first sentence-ish line of a class's docstring."""
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # the signature dataclasses make up
        return ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def _kind_name(hint: Any) -> str:
    if hint is type(None):
        return "none"
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [_kind_name(a) for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        return " | ".join(kinds) + (" (optional)" if optional else "")
    if hint is Path:
        return "path"
    return getattr(hint, "__name__", str(hint))


def _walk(
    owner: type, value: Any, prefix: str, context: str, named: bool
) -> Iterator[tuple[str, Any, Any, str]]:
    """(key, type hint, value, meaning) of every leaf under dataclass `value`."""
    hints = typing.get_type_hints(owner)
    comments = _comments(owner)
    for item in dataclasses.fields(owner):
        key, hint = f"{prefix}{item.name}", hints[item.name]
        current = getattr(value, item.name) if value is not None else None
        comment, own = comments.get(item.name, ("", False))
        meaning = comment or context or _summary(owner)
        inner = current if current is not None else _default(item)
        if dataclasses.is_dataclass(inner) and not isinstance(inner, type):
            table = (comment if own else "") or _summary(type(inner))
            yield from _walk(type(inner), inner, f"{key}.", table, named)
        elif typing.get_origin(hint) in (Mapping, dict, typing.Mapping) or isinstance(
            inner, Mapping
        ):
            element = typing.get_args(hint)[1] if typing.get_args(hint) else Any
            entries: dict[str, Any] = {NAME: None} if named else dict(inner or {})
            for name, entry in entries.items():
                if dataclasses.is_dataclass(element):
                    yield from _walk(
                        element,
                        entry if entry is not None else element(),
                        f"{key}.{name}.",
                        _summary(element),
                        named,
                    )
                else:
                    yield f"{key}.{name}", element, entry, meaning
        else:
            yield key, hint, current, meaning


def _default(item: dataclasses.Field[Any]) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None


def settings(config: ServerConfig | None = None) -> list[Setting]:
    """Every setting, valued as in `config`; when None, the defaults, with each table of
    names (`databases.<name>`) shown once as `<name>` with its defaults."""
    effective = config or ServerConfig()
    maxima = {f"default_limits.{k}": v for k, v in vars(effective.max_limits).items()}
    env_keys = config_module._TYPES  # the keys the environment can set
    found: list[Setting] = []
    for key, hint, value, meaning in _walk(ServerConfig, effective, "", "", named=config is None):
        found.append(
            Setting(
                key=key,
                kind=_kind_name(hint),
                value=value,
                meaning=meaning,
                maximum=maxima.get(key),
                env=config_module._env_name(key) if key in env_keys else None,
            )
        )
    if config is None:
        found = _with_named_keys(found, env_keys)
    return found


def _with_named_keys(found: list[Setting], env_keys: Mapping[str, type]) -> list[Setting]:
    """A free-form table (`tenant_defaults.max_limits.<name>`) whose names the environment
    knows is listed by those names, each with the table's meaning."""
    listed = {entry.key for entry in found}
    by_table: dict[str, list[Setting]] = {}
    for key, kind in env_keys.items():
        table = f"{key.rsplit('.', 1)[0]}.{NAME}"
        if key not in listed and table in listed:
            by_table.setdefault(table, []).append(
                Setting(key, _kind_name(kind), None, "", env=config_module._env_name(key))
            )
    out: list[Setting] = []
    for entry in found:
        named = by_table.get(entry.key)
        if named is None:
            out.append(entry)
        else:
            out.extend(dataclasses.replace(n, meaning=entry.meaning) for n in named)
    return out


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
