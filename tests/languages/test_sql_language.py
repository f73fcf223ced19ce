"""SQL jobs read in Python: parameters declared in comments, statements split by a real
tokenizer and SQLite's own completeness check, arguments checked before anything runs.
The jobs themselves run in the real sandbox in tests/test_conformance.py (runtimes/sql)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from gristmill.config import ConfigError, DatabaseConfig
from gristmill.errors import InvalidRequest
from gristmill.languages import Registry
from gristmill.languages.plugin import ArgumentsRejected, LanguagePlugin
from gristmill.model import Job, Limits

LIMITS = Limits(
    wall_time_ms=1000, memory_bytes=1 << 26, cpu_time_ms=1000, processes=4, output_bytes=1024
)


@pytest.fixture(scope="module")
def plugin() -> LanguagePlugin:
    return Registry().get("sql").plugin


def message(plugin: LanguagePlugin, code: str, env: dict[str, str] | None = None, **args: Any):
    job = Job("j", "sql", code, "main", args, LIMITS, env=env or {})
    return json.loads(plugin.job_message(job, "/job/main.sql"))


SCRIPT = """-- Nightly report.
-- :since (date)
-- :limit (int) = 10
-- :label (text) = 'it''s'
-- :ratio (float) = 0.5
-- :flag (bool) = false
-- :payload (json) = {"a": [1, 2]}
-- :raw (blob)
-- :anything
select :since, :limit, :label, :ratio, :flag, :payload, :raw, :anything
"""


def test_describe_gives_each_declared_parameter_its_json_schema(plugin):
    schema = plugin.describe(SCRIPT, "main")
    assert schema["properties"] == {
        "since": {"type": "string", "format": "date"},
        "limit": {"type": "integer", "default": 10},
        "label": {"type": "string", "default": "it's"},
        "ratio": {"type": "number", "default": 0.5},
        "flag": {"type": "boolean", "default": False},
        "payload": {"default": {"a": [1, 2]}},
        "raw": {"type": "string", "contentEncoding": "base64"},
        "anything": {},
    }
    assert schema["required"] == ["since", "raw", "anything"]


def test_a_declaration_inside_a_string_is_not_a_declaration(plugin):
    schema = plugin.describe("select '\n-- :x (int)\n' as s", "main")
    assert schema["properties"] == {}


def test_an_unknown_type_is_refused_by_describe(plugin):
    with pytest.raises(InvalidRequest):
        plugin.describe("-- :x (frobnicate)\nselect :x", "main")


def test_statements_split_where_sqlite_says_they_end(plugin):
    code = (
        "create table t (x text); -- a ; in a comment\n"
        "create trigger up after insert on t begin\n"
        "  update t set x = upper(x);\n"
        "end;\n"
        "insert into t values ('a;b');\n"
        "\n"
        "select x from t"
    )
    sent = message(plugin, code)
    assert [s["line"] for s in sent["statements"]] == [1, 2, 5, 7]
    assert "end;" in sent["statements"][1]["sql"]
    assert "".join(s["sql"] for s in sent["statements"]) == code


def test_values_are_sent_apart_from_the_text_with_defaults_filled(plugin):
    sent = message(plugin, "-- :a (int)\n-- :b (text) = 'x'\nselect :a, :b, :a", a=3)
    assert sent["params"] == {"a": 3, "b": "x"}
    assert sent["statements"][0]["names"] == ["a", "b"]
    assert ":a" in sent["statements"][0]["sql"]


def test_an_integral_float_is_an_integer_and_a_fraction_is_refused(plugin):
    assert message(plugin, "-- :n (int)\nselect :n", n=2.0)["params"] == {"n": 2}
    with pytest.raises(ArgumentsRejected, match="'n'"):
        message(plugin, "-- :n (int)\nselect :n", n=2.5)


@pytest.mark.parametrize(
    ("code", "args", "words"),
    [
        ("-- :a (int)\nselect :a, :b", {"a": 1}, ":b is not declared"),
        ("select ?", {}, "placeholder"),
        ("select $x", {}, "placeholder"),
        ("select @x", {}, "placeholder"),
        ("-- :a (int)\nselect :a", {}, "missing argument 'a'"),
        ("-- :a (int)\nselect :a", {"a": 1, "z": 2}, "unknown argument 'z'"),
        ("-- :a (bool)\nselect :a", {"a": 1}, "'a'"),
        ("-- :a (text)\nselect :a", {"a": 1}, "'a'"),
        ("-- :a (blob)\nselect :a", {"a": "not base64!"}, "base64"),
        ("-- :a (frobnicate)\nselect :a", {"a": 1}, "unknown type"),
    ],
)
def test_arguments_that_do_not_fit_are_refused_before_running(plugin, code, args, words):
    with pytest.raises(ArgumentsRejected, match=words):
        message(plugin, code, **args)


def test_an_unknown_database_name_is_refused(plugin):
    with pytest.raises(ArgumentsRejected, match="nowhere"):
        message(plugin, "select 1", env={"SQL_DATABASE": "nowhere"})


def test_results_and_commit_are_chosen_by_the_request(plugin):
    sent = message(plugin, "select 1", env={"SQL_RESULTS": "all", "SQL_COMMIT": "1"})
    assert (sent["results"], sent["commit"]) == ("all", True)
    sent = message(plugin, "select 1")
    assert (sent["results"], sent["commit"]) == ("last", False)


def test_text_that_does_not_tokenize_goes_to_sqlite_whole(plugin):
    sent = message(plugin, "select 'unterminated")
    assert sent["statements"] == [
        {"sql": "select 'unterminated", "line": 1, "start_line": 1, "names": []}
    ]


def test_postgres_statements_split_outside_dollar_quotes_and_renumber_placeholders():
    plugin = Registry().get("sql").plugin
    plugin.configure({"pg": DatabaseConfig(dsn="host=/nowhere")})
    code = (
        "-- $1 a (int)\n-- $2 b (text) = 'x'\n"
        "create function f() returns int as $$ select 1; $$ language sql;\n"
        "select $2 || ';', $2, $1::int"
    )
    sent = message(plugin, code, {"SQL_DATABASE": "pg"}, a=1)
    assert len(sent["statements"]) == 2
    assert "$$ select 1; $$" in sent["statements"][0]["sql"]
    assert sent["statements"][1]["sql"] == "\nselect $1 || ';', $1, $2::int"
    assert sent["statements"][1]["names"] == ["b", "a"]
    assert sent["params"] == {"a": 1, "b": "x"}
    assert sent["relay"]["socket"] == "/gristmill/database/relay.sock"
    with pytest.raises(ArgumentsRejected, match=r"\$3 is not declared"):
        message(plugin, "-- $1 a (int)\nselect $1, $3", {"SQL_DATABASE": "pg"}, a=1)


def test_an_untyped_parameter_takes_its_type_from_its_default(plugin):
    schema = plugin.describe("-- :n = 3\n-- :s = 'a'\n-- :f = 0.5\n-- :b = true\nselect 1", "main")
    assert schema["properties"] == {
        "n": {"type": "integer", "default": 3},
        "s": {"type": "string", "default": "a"},
        "f": {"type": "number", "default": 0.5},
        "b": {"type": "boolean", "default": True},
    }


@pytest.mark.parametrize(
    "code",
    [
        "select " + "(" * 20_000 + "1" + ")" * 20_000,
        "-- :x (int)\nselect :x, '\udcff'",
        "select 1 " + "-- :y (int)\n" * 50_000,
    ],
)
def test_hostile_code_is_answered_not_crashed_on(plugin, code):
    schema = plugin.describe(code, "main")
    assert schema["type"] == "object"


def test_code_past_the_parser_bound_is_a_clear_error(plugin):
    with pytest.raises(InvalidRequest, match="bytes"):
        plugin.describe("select 1;" * 600_000, "main")


def test_a_database_role_per_tenant_is_a_template_of_one_field():
    config = DatabaseConfig(dsn="dbname=x", role="job_{tenant}")
    assert config.per_tenant and config.role_for("alice") == "job_alice"
    assert config.shared_role_warning("x") is None
    shared = DatabaseConfig(dsn="dbname=x", role="jobs")
    assert not shared.per_tenant and shared.role_for("alice") == "jobs"
    assert "every tenant's jobs connect as one role ('jobs')" in (
        shared.shared_role_warning("x") or ""
    )
    for bad in ("job_{name}", "job_{tenant", "{}"):
        with pytest.raises(ConfigError, match="the only field is"):
            DatabaseConfig(dsn="dbname=x", role=bad)
    # PostgreSQL cuts names at 63 bytes: two long tenants would share a role.
    for tenant in ("", "t" * 60, "a\0b"):
        with pytest.raises(ConfigError, match="has no role of its own"):
            config.role_for(tenant)


def test_the_start_up_log_says_when_tenants_share_a_role(plugin, caplog):
    with caplog.at_level(logging.WARNING):
        plugin.configure(
            {
                "shared": DatabaseConfig(dsn="dbname=x", role="jobs"),
                "own": DatabaseConfig(dsn="dbname=x", role="job_{tenant}"),
                "lite": DatabaseConfig(kind="sqlite", path="/tmp/x.sqlite"),
            }
        )
    plugin.configure({})
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "database 'shared': every tenant's jobs" in warned[0]
