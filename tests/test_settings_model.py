"""Each setting is declared once (gristmill/config.py): every one of them, named tables
included, round-trips from a TOML file, the environment and a flag, with the values made
from its declaration (a new setting is covered with no new test); an unknown key in each
kind of file is refused naming the file and line, with the likely key; a value out of
range is refused in the user's words."""

from __future__ import annotations

import argparse
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gristmill.config import ConfigError, ServerConfig, load_config
from gristmill.config_flags import add_flags, overrides
from gristmill.config_schema import NAME, Leaf, leaves
from gristmill.conformance.cases import CaseFileError, load_case_file
from gristmill.isolation.profile import ProfileError, load_profile
from gristmill.languages.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]


def _other(leaf: Leaf) -> Any:
    """A valid value of `leaf` other than its default, from its declared type."""
    kinds = [k for k in (leaf.kind, *typing.get_args(leaf.kind)) if k is not type(None)]
    for literal in (k for k in kinds if typing.get_origin(k) is typing.Literal):
        return next(c for c in typing.get_args(literal) if c != leaf.default)
    if leaf.kind is bool:
        return not leaf.default
    if int in kinds:
        return 7 if leaf.default is None else leaf.default + 1
    if float in kinds:
        return leaf.default + 1.5
    if Path in kinds:
        return Path(f"/srv/{leaf.key.replace('.', '-')}")
    return "example.org:443"  # a valid host for the allow lists, a value for the rest


def _key(leaf: Leaf) -> str:
    return leaf.key.replace(NAME, "main")


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _read(config: ServerConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value[part] if isinstance(value, typing.Mapping) else getattr(value, part)
    return value


EVERY = {_key(leaf): _other(leaf) for leaf in leaves(ServerConfig)}


def _toml(values: dict[str, Any]) -> str:
    tables: dict[str, list[str]] = {}
    for key, value in values.items():
        table, _, name = key.rpartition(".")
        shown = json.dumps(str(value) if isinstance(value, Path) else value)
        tables.setdefault(table, []).append(f"{name} = {shown}")
    return "\n".join(f"[{t}]\n" * bool(t) + "\n".join(lines) for t, lines in tables.items())


def _assert_every(config: ServerConfig, values: dict[str, Any]) -> None:
    for key, value in values.items():
        assert _read(config, key) == value, key


def test_every_setting_round_trips_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "gristmill.toml"
    path.write_text(_toml(EVERY))
    _assert_every(load_config(path, environ={}), EVERY)


def test_every_setting_the_environment_can_set_round_trips_from_its_variable() -> None:
    env_leaves = [leaf for leaf in leaves(ServerConfig) if leaf.env]
    assert len(env_leaves) > 80  # every one but the tables of names
    environ = {leaf.env: _text(EVERY[leaf.key]) for leaf in env_leaves if leaf.env}
    config = load_config(environ=environ)
    _assert_every(config, {leaf.key: EVERY[leaf.key] for leaf in env_leaves})


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(argv)


def test_every_setting_round_trips_from_set_and_from_its_own_flag() -> None:
    argv = [f"--set={key}={_text(value)}" for key, value in EVERY.items()]
    _assert_every(load_config(environ={}, overrides=overrides(_parse(*argv))), EVERY)
    flagged = [leaf for leaf in leaves(ServerConfig) if leaf.flag]
    assert {"--concurrency", "--allow-network", "--default-timeout-ms"} <= {
        leaf.flag for leaf in flagged
    }
    for leaf in flagged:
        value, flag = EVERY[leaf.key], str(leaf.flag)
        argv = [flag] if leaf.kind is bool else [flag, _text(value)]
        others = {k: v for k, v in EVERY.items() if k != leaf.key}  # its companions
        config = load_config(environ={}, overrides={**others, **overrides(_parse(*argv))})
        assert _read(config, leaf.key) == value, leaf.flag


def _server(path: Path) -> None:
    path.write_text('address = "127.0.0.1:1"\n\n[default_limits]\nwall_tme_ms = 5\n')
    load_config(path, environ={})


def _runtime(path: Path) -> None:
    (REPO / "runtimes" / "python" / "runtime.toml").read_text()
    text = (REPO / "runtimes" / "python" / "runtime.toml").read_text()
    path.write_text(text.replace("result_fallback", "memroy_variable = true\nresult_fallback"))
    load_spec(path.parent)


def _profile(path: Path) -> None:
    (path.parent / "base.toml").write_text((REPO / "sandbox/profiles/base.toml").read_text())
    path.write_text('hostname = "x"\n[[mount]]\nsource = "/a"\ntarget = "/a"\nwriteable = true\n')
    load_profile(path.parent, "lang")


def _case(path: Path) -> None:
    path.write_text(
        '[[case]]\nname = "typo"\nlanguage = "python"\ncode = """\nx = 1\n"""\n'
        'expect.verdit = "SUCCESS"\n'
    )
    load_case_file(path)


@pytest.mark.parametrize(
    ("name", "load", "error", "line", "wrong", "meant"),
    [
        ("gristmill.toml", _server, ConfigError, 4, "wall_tme_ms", "default_limits.wall_time_ms"),
        ("runtime.toml", _runtime, SpecError, None, "memroy_variable", "memory_variable"),
        ("lang.toml", _profile, ProfileError, 5, "writeable", "writable"),
        ("cases.toml", _case, CaseFileError, 7, "verdit", "verdict"),
    ],
    ids=["server config", "runtime.toml", "sandbox profile", "conformance case"],
)
def test_an_unknown_key_is_refused_naming_the_file_the_line_and_the_likely_key(
    tmp_path: Path,
    name: str,
    load: Callable[[Path], None],
    error: type[Exception],
    line: int | None,
    wrong: str,
    meant: str,
) -> None:
    path = tmp_path / name
    with pytest.raises(error) as raised:
        load(path)
    message = str(raised.value)
    if line is None:  # where the typo went in the real file
        line = path.read_text().splitlines().index("memroy_variable = true") + 1
    assert f"{path} line {line}" in message, message
    assert wrong in message and f"did you mean {meant!r}" in message, message


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "max_concurrent_jobs = 0",
            "max_concurrent_jobs in {path} line 2: must be at least 1, got 0",
        ),
        (
            "[default_limits]\nwall_time_ms = -1",
            "default_limits.wall_time_ms in {path} line 3: must be at least 0, got -1",
        ),
        ("[caps]\nfiles = 0", "caps.files in {path} line 3: must be at least 1, got 0"),
        (
            '[telemetry]\nlog_format = "xml"',
            "telemetry.log_format in {path} line 3: must be one of",
        ),
        (
            "[pool]\nenabled = 1",
            "pool.enabled in {path} line 3: not a boolean (true or false), got 1",
        ),
        ('[deps]\nwall_time_ms = "5"', 'deps.wall_time_ms in {path} line 3: expected int, got "5"'),
    ],
)
def test_a_value_out_of_range_or_of_the_wrong_type_is_refused_in_the_users_words(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "gristmill.toml"
    path.write_text(f'address = "127.0.0.1:1"\n{toml}\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert message.format(path=path) in str(raised.value)


def test_an_out_of_range_variable_or_flag_names_where_it_was_set() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("caps.files in GRISTMILL_CAPS_FILES: must be at least 1")
    ):
        load_config(environ={"GRISTMILL_CAPS_FILES": "0"})
    with pytest.raises(
        ConfigError, match=re.escape("pool.idle_s in a flag: must be at least 0, got -1")
    ):
        load_config(environ={}, overrides=overrides(_parse("--set", "pool.idle_s=-1")))
    with pytest.raises(ConfigError, match=re.escape("did you mean 'pool.idle_s'")):
        load_config(environ={}, overrides=overrides(_parse("--set", "pool.idle=5")))
