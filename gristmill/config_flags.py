"""The server settings' flags, made from their declarations (gristmill/config.py).

A setting declared with `flag=` has a flag of its own (`--concurrency`); every setting,
named tables included, can be given as `--set KEY=VALUE`. Each flag's `dest` is the
setting's flat key, so that `overrides` hands them to `load_config` as they are.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any

from gristmill.config import ConfigError, ServerConfig
from gristmill.config_schema import Leaf, leaves

__all__ = ["SET_DEST", "add_flags", "overrides"]

SET_DEST = "settings"
_METAVARS = {"_ms": "MS", "_bytes": "BYTES", "_s": "S", "_file": "FILE", "_dir": "DIR"}


def _metavar(leaf: Leaf) -> str:
    name = leaf.key.rsplit(".", 1)[-1]
    for suffix, metavar in _METAVARS.items():
        if name.endswith(suffix):
            return metavar
    return "N" if leaf.kind in (int, int | None) else name.upper()


def _help(leaf: Leaf) -> str:
    first = leaf.description.split(": ", 1)[0].split("; ", 1)[0].split(" (", 1)[0].rstrip(".")
    default = "automatic" if leaf.default is None else json.dumps(leaf.default, default=str)
    return f"{leaf.key}: {first} (default: {default})".replace("%", "%%")


def _add(parser: argparse._ActionsContainer, leaf: Leaf) -> None:
    assert leaf.flag is not None
    kinds = [k for k in (leaf.kind, *typing.get_args(leaf.kind)) if k is not type(None)]
    choices = [
        c for k in kinds if typing.get_origin(k) is typing.Literal for c in typing.get_args(k)
    ]
    if leaf.kind is bool:
        parser.add_argument(
            leaf.flag, dest=leaf.key, action="store_true", default=None, help=_help(leaf)
        )
    elif choices:
        parser.add_argument(leaf.flag, dest=leaf.key, choices=choices, help=_help(leaf))
    else:
        kind = next((k for k in (int, float, Path) if k in kinds), str)
        parser.add_argument(
            leaf.flag, dest=leaf.key, type=kind, metavar=_metavar(leaf), help=_help(leaf)
        )


def add_flags(
    parser: argparse._ActionsContainer,
    only: Collection[str] | None = None,
    without: Collection[str] = (),
) -> None:
    """The flags of the server's settings (those of the keys `only`, when given, less
    those of `without`), and `--set KEY=VALUE` for any setting unless `only` is given."""
    groups: dict[str, argparse._ActionsContainer] = {}
    for leaf in leaves(ServerConfig):
        if leaf.flag and (only is None or leaf.key in only) and leaf.key not in without:
            table = leaf.key.rpartition(".")[0]
            if table and isinstance(parser, argparse.ArgumentParser) and table not in groups:
                groups[table] = parser.add_argument_group(f"[{table}] settings")
            _add(groups.get(table, parser), leaf)
    if only is None:
        parser.add_argument(
            "--set",
            dest=SET_DEST,
            action="append",
            metavar="KEY=VALUE",
            help="any setting by its key (see gristmill config --reference), e.g. "
            "--set pool.idle_s=5 or --set databases.main.dsn=...; repeatable",
        )


def overrides(options: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags in `options` give, by flat key (`load_config`'s overrides)."""
    keys = {leaf.key for leaf in leaves(ServerConfig)}
    given = {k: v for k, v in vars(options).items() if k in keys and v is not None}
    for item in getattr(options, SET_DEST, None) or ():
        key, equals, value = item.partition("=")
        if not equals:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        given[key.strip()] = value
    return given
