"""The typed values of a conformance case file, and where each is (`Where`), so that a
mistake is an error naming the file, the line, the case and the key."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gristmill.typed_toml import Loc, line_of, suggest

__all__ = [
    "CaseFileError",
    "Where",
    "get_table",
    "only_keys",
    "optional_bool",
    "optional_int",
    "optional_regex",
    "optional_str",
    "read_toml",
    "required_str",
    "string_list",
    "string_table",
]


class CaseFileError(Exception):
    """A case file is malformed; the message names the file, the case and the key."""


@dataclass(frozen=True)
class Where:
    """A place in a case file: shown as "FILE line N: case 'name'", found on error only."""

    path: Path
    loc: Loc
    label: str

    def at(self, *keys: str | int, label: str = "") -> Where:
        """A table inside this one (`label` appended to how it is shown)."""
        return Where(self.path, self.loc + keys, self.label + label)

    def line(self, *keys: str | int) -> str:
        try:
            number = line_of(self.path.read_text(encoding="utf-8"), self.loc + keys)
        except (OSError, UnicodeDecodeError):
            number = None
        return f"{self.path} line {number}" if number else str(self.path)

    def __str__(self) -> str:
        return f"{self.line()}: {self.label}" if self.label else self.line()


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CaseFileError(f"{path}: cannot be read as TOML: {error}") from error


def string_list(raw: Mapping[str, Any], key: str, where: Where | str) -> tuple[str, ...] | None:
    if key not in raw:
        return None
    values = raw[key]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CaseFileError(f"{where}: {key} must be a list of strings")
    return tuple(values)


def string_table(raw: Mapping[str, Any], key: str, where: Where | str) -> dict[str, str]:
    table = get_table(raw, key, where) if key in raw else {}
    for name, value in table.items():
        if not isinstance(value, str):
            raise CaseFileError(f"{where}: {key}.{name} must be a string")
    return table


def only_keys(table: Mapping[str, Any], allowed: frozenset[str], where: Where) -> None:
    """Refuse a key the schema does not have, on its own line, with the likely one."""
    if unknown := sorted(set(table) - allowed):
        key = unknown[0]
        place = where.line(key) + (f": {where.label}" if where.label else "")
        raise CaseFileError(
            f"{place}: unknown key {key!r}{suggest(key, sorted(allowed))} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def get_table(
    table: Mapping[str, Any], key: str, where: Where | str, prefix: str = ""
) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise CaseFileError(f"{where}: {prefix}{key} must be a table")
    return value


def required_str(table: Mapping[str, Any], key: str, where: Where | str, prefix: str = "") -> str:
    if key not in table:
        raise CaseFileError(f"{where}: {prefix}{key} is required")
    value = optional_str(table, key, where, prefix)
    assert value is not None
    return value


def optional_str(
    table: Mapping[str, Any], key: str, where: Where | str, prefix: str = ""
) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise CaseFileError(f"{where}: {prefix}{key} must be a string")
    return value


def optional_int(
    table: Mapping[str, Any],
    key: str,
    where: Where | str,
    *,
    minimum: int | None = None,
    prefix: str = "",
) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    # bool is an int in Python but never a number in a case file.
    if isinstance(value, bool) or not isinstance(value, int):
        raise CaseFileError(f"{where}: {prefix}{key} must be an integer")
    if minimum is not None and value < minimum:
        raise CaseFileError(f"{where}: {prefix}{key} must be at least {minimum}")
    return value


def optional_bool(
    table: Mapping[str, Any], key: str, where: Where | str, prefix: str = ""
) -> bool | None:
    value = table.get(key)
    if value is not None and not isinstance(value, bool):
        raise CaseFileError(f"{where}: {prefix}{key} must be true or false")
    return value


def optional_regex(
    table: Mapping[str, Any], key: str, where: Where | str
) -> re.Pattern[str] | None:
    pattern = optional_str(table, key, where, prefix="expect.")
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise CaseFileError(f"{where}: expect.{key} is not a valid regex: {error}") from error
