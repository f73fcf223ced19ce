"""What a settings model declares, walked once: keys, types, defaults, sources.

A model (gristmill/config.py) is frozen pydantic dataclasses whose fields are made by
`setting`; `leaves` lists every setting under it by flat key (`deps.cache_dir`,
`databases.<name>.dsn`), and from that list come the loader (a TOML file, then
`GRISTMILL_*` variables, then flags), the settings reference and the flags.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge
from pydantic import ConfigDict, Field, ValidationError

from gristmill.errors import GristmillError
from gristmill.typed_toml import adapter, explain, line_of, read, suggest

__all__ = ["ENV_PREFIX", "NAME", "TABLE", "ConfigError", "Leaf", "leaves", "load", "setting"]

ENV_PREFIX = "GRISTMILL_"
TABLE = ConfigDict(extra="forbid")
"""Every table of settings refuses keys it does not declare."""
NAME = "<name>"
"""A table of names (`databases.<name>`) in a key: the name is the operator's."""


class ConfigError(GristmillError):
    """A setting is unknown or its value is malformed or inconsistent."""


def setting(
    default: Any,
    description: str,
    *,
    ge: float | None = None,
    each_ge: float | None = None,
    flag: str | None = None,
    flags: Mapping[str, str] | None = None,
) -> Any:
    """One setting: its default (a function: computed when read), what it means, its
    lower bound (`each_ge`: that of each number of a plain dataclass table, `Limits`),
    and the `serve` flag that sets it (`flags`: a table's members')."""
    extra: dict[str, Any] = {"flag": flag} if flag else {"flags": dict(flags or {})}
    if each_ge is not None:
        extra["each_ge"] = each_ge
    factory = default if callable(default) else dict if isinstance(default, dict) else None
    if factory is not None:
        return Field(
            default_factory=factory, description=description, ge=ge, json_schema_extra=extra
        )
    return Field(default=default, description=description, ge=ge, json_schema_extra=extra)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One setting: its flat key and all that its declaration says."""

    key: str
    kind: Any
    default: Any
    description: str
    minimum: float | None = None
    flag: str | None = None
    # A member of a plain dataclass table (`Limits`): the table's default fills the
    # members a source leaves out.
    member: bool = False

    @property
    def env(self) -> str | None:
        """Its environment variable; a table of names is set by a file or flags only."""
        return None if NAME in self.key else ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.kind)

    def parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


_UNSET: Any = object()


def _fields(cls: type) -> Iterator[tuple[str, Any, Any, str, float | None, dict[str, Any]]]:
    if hasattr(cls, "__pydantic_fields__"):
        for name, info in cls.__pydantic_fields__.items():
            minimum = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            default = info.get_default(call_default_factory=True)
            yield name, info.annotation, default, info.description or "", minimum, extra
    else:  # a plain dataclass (`Limits`): its members take their table's description
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            default = None if item.default is dataclasses.MISSING else item.default
            yield item.name, hints[item.name], default, "", None, {}


def _walk(
    cls: type,
    prefix: str,
    value: Any,
    context: str,
    flags: Mapping[str, Any],
    bound: float | None = None,
) -> Iterator[Leaf]:
    """The leaves under `cls`; `bound`: the lower bound a plain dataclass table's
    declaration gives its numbers (`Limits` has none of its own)."""
    for name, kind, default, description, minimum, extra in _fields(cls):
        key, meaning = prefix + name, description or context
        current = default if value is _UNSET else getattr(value, name)
        if dataclasses.is_dataclass(kind):
            table = typing.cast(type, kind)
            flags_of, bound_of = extra.get("flags", {}), extra.get("each_ge")
            yield from _walk(table, f"{key}.", current, meaning, flags_of, bound_of)
        elif typing.get_origin(kind) in (Mapping, dict):
            names, element = typing.get_args(kind)
            for entry in typing.get_args(names) or (NAME,):
                if dataclasses.is_dataclass(element):
                    yield from _walk(element, f"{key}.{entry}.", _UNSET, meaning, {})  # type: ignore[arg-type]
                else:
                    yield Leaf(f"{key}.{entry}", element, None, meaning)
        else:
            flag = extra.get("flag") or flags.get(name)
            member = not hasattr(cls, "__pydantic_fields__")
            if member and kind in (int, float):
                minimum = bound
            yield Leaf(key, kind, current, meaning, minimum, flag, member)


@functools.cache
def leaves(cls: type) -> tuple[Leaf, ...]:
    """Every setting of model `cls`, in declaration order, valued at its defaults."""
    return tuple(_walk(cls, "", _UNSET, "", {}))


def find(cls: type, key: str) -> Leaf | None:
    """The setting `key` names (`databases.main.dsn`: `databases.<name>.dsn`)."""
    parts = tuple(key.split("."))
    for leaf in leaves(cls):
        pattern = leaf.parts()
        if len(pattern) == len(parts) and all(
            p in (q, NAME) and (p != NAME or q) for p, q in zip(pattern, parts, strict=True)
        ):
            return leaf
    return None


def _close_keys(cls: type, key: str) -> list[str]:
    parts = key.split(".")
    named = [
        ".".join(
            parts[i] if p == NAME and i < len(parts) else p for i, p in enumerate(leaf.parts())
        )
        for leaf in leaves(cls)
    ]
    return named


def _typed(leaf: Leaf, value: Any, text: bool) -> Any:
    """A source's value as the setting's type: text (the environment, a flag) is parsed;
    a file's typed value must already be of that type (true is not 1, "5" is not 5)."""
    if text and isinstance(value, str):
        if not value and leaf.optional:
            return None
        value = adapter(leaf.kind).validate_strings(value)
    lax = Path in (leaf.kind, *typing.get_args(leaf.kind))
    kind = leaf.kind
    if leaf.member and leaf.minimum is not None:  # pydantic does not see a plain dataclass's
        kind = Annotated[kind, Ge(leaf.minimum)]
    return adapter(kind).validate_python(value, strict=not lax)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *tables, name = key.split(".")
        table = nested
        for part in tables:
            table = table.setdefault(part, {})
        table[name] = value
    return nested


def load(
    cls: type,
    error: Callable[[str], Exception],
    path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
) -> Any:
    """Model `cls` from its defaults, then the file at `path`, then `environ`, then
    `overrides` (flat keys; None: not given); `error` names the key and where it was set."""
    given: dict[str, tuple[Any, str, bool]] = {}
    if path is not None:
        data, content = read(path, error)  # type: ignore[arg-type]
        for key, value in _flatten(data):
            line = line_of(content, tuple(key.split(".")))
            given[key] = (value, f"{path} line {line}" if line else str(path), False)
    for leaf in leaves(cls):
        if leaf.env and leaf.env in environ:
            given[leaf.key] = (environ[leaf.env], leaf.env, True)
    for key, value in overrides.items():
        if value is not None:
            given[key] = (value, "a flag", True)
    values = {leaf.key: leaf.default for leaf in leaves(cls) if leaf.member}
    for key, (value, origin, text) in given.items():
        found = find(cls, key)
        if found is None:
            raise error(f"{key} in {origin}: unknown setting{suggest(key, _close_keys(cls, key))}")
        try:
            values[key] = _typed(found, value, text)
        except ValidationError as failure:
            raise error(f"{key} in {origin}: {explain(failure.errors()[0])}") from None
    try:
        return adapter(cls).validate_python(_nest(values))
    except ValidationError as failure:
        problems = []
        for problem in failure.errors():
            key = ".".join(str(part) for part in problem["loc"])
            origin = given[key][1] if key in given else "the defaults"
            problems.append(f"{key} in {origin}: {explain(problem)}")
        raise error("\n".join(problems)) from None
