"""Describe for C#: the entry point's parameters as a JSON Schema, read with tree-sitter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gristmill.errors import InvalidRequest
from gristmill.languages.registry import Registry


@pytest.fixture(scope="module")
def describe() -> Any:
    return Registry().get("csharp").plugin.describe


CODE = """\
#r "nuget: Gristmill.Words, 1.0.0"
using System;
using System.Collections.Generic;

public enum Tier { Free, Pro }

public class Address { public string City; public int Zip { get; set; } private int secret; }

public class Script
{
    /// <summary>Places an order.</summary>
    /// <param name="quantity">How many to order.</param>
    public static object Main(int quantity, string label = "x", double ratio = -0.5,
                              List<long> ids = null, Dictionary<string, bool> flags = null,
                              Tier tier = Tier.Pro, Address to = null, int? limit = null,
                              DateTime when = default, Guid id = default, byte[] blob = null,
                              string[] tags = null)
    {
        return quantity;
    }

    public static void Main(string[] args) { }
}
"""


def test_every_kind_of_parameter_has_its_schema(describe: Any) -> None:
    schema = describe(CODE, "Main")
    assert schema["description"] == "Places an order."
    assert schema["required"] == ["quantity"]
    p = schema["properties"]
    assert p["quantity"] == {"type": "integer", "description": "How many to order."}
    assert p["label"] == {"type": "string", "default": "x"}
    assert p["ratio"] == {"type": "number", "default": -0.5}
    assert p["ids"] == {"type": "array", "items": {"type": "integer"}, "default": None}
    assert p["flags"] == {
        "type": "object",
        "additionalProperties": {"type": "boolean"},
        "default": None,
    }
    assert p["tier"] == {"type": "string", "enum": ["Free", "Pro"], "default": "Pro"}
    assert p["to"] == {
        "type": "object",
        "properties": {"City": {"type": "string"}, "Zip": {"type": "integer"}},
        "default": None,
    }
    assert p["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert p["when"] == {"type": "string", "format": "date-time"}
    assert p["id"] == {"type": "string", "format": "uuid"}
    assert p["blob"] == {"type": "string", "contentEncoding": "base64", "default": None}
    assert p["tags"] == {"type": "array", "items": {"type": "string"}, "default": None}


def test_an_absent_entry_point_names_the_field(describe: Any) -> None:
    with pytest.raises(InvalidRequest, match="entry_point"):
        describe("public class Script { public static void Main(string[] args) { } }", "Main")
    with pytest.raises(InvalidRequest, match="entry_point"):
        describe("class Hidden { public static int Main() { return 1; } }", "Main")


@pytest.mark.parametrize(
    "code",
    [
        "public class Script { public static object Main(int a { }",
        "public class S {" + "{" * 100_000,
        "public class S { public static object Main() { return " + "(" * 50_000 + "1; } }",
        "\udcff\udcfe public class",
        "x" * (5 * 1024 * 1024),
    ],
    ids=["syntax-error", "deeply-nested-braces", "deeply-nested-parens", "invalid-utf8", "huge"],
)
def test_hostile_code_is_an_invalid_request_not_a_crash(describe: Any, code: str) -> None:
    with pytest.raises(InvalidRequest, match="code"):
        describe(code, "Main")


def test_nuget_references_are_read_in_order_each_once() -> None:
    plugin = Registry().get("csharp").plugin
    code = (
        '#r "nuget: Newtonsoft.Json, 13.0.1"\n'
        '#r "nuget: Dapper"\n'
        '#r "nuget: newtonsoft.json, 12.0.0"\n'
    )
    found = plugin.dependencies(code + CODE)
    assert [(d.name, d.requirement, d.where) for d in found] == [
        ("Newtonsoft.Json", "Newtonsoft.Json, 13.0.1", "#r, line 1"),
        ("Dapper", "Dapper", "#r, line 2"),
        ("Gristmill.Words", "Gristmill.Words, 1.0.0", "#r, line 4"),
    ]


@pytest.mark.parametrize(
    "line",
    ['#r "nuget: https://evil.example/x.nupkg, 1.0"', '#r "nuget: Good.Name, 1.0; rm -rf"'],
)
def test_a_reference_that_is_not_an_id_and_a_version_is_refused(line: str) -> None:
    from gristmill.languages.errors import DependencyFailure

    with pytest.raises(DependencyFailure, match="line 1"):
        Registry().get("csharp").plugin.dependencies(line + "\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"quantity": 1, "extra": 2}, "unknown argument extra"),
        ({"label": "y"}, "missing argument quantity"),
        ({"quantity": "seven"}, "quantity: expected integer, got string"),
        ({"quantity": 1, "ratio": "x"}, "ratio: expected number, got string"),
        ({"quantity": 1, "ids": {"a": 1}}, "ids: expected array, got object"),
        ({"quantity": 1, "limit": True}, "limit: expected integer, got boolean"),
    ],
)
def test_arguments_that_cannot_fit_are_refused_before_any_build(
    args: dict[str, Any], message: str
) -> None:
    from gristmill.languages.plugin import ArgumentsRejected

    plugin = Registry().get("csharp").plugin
    with pytest.raises(ArgumentsRejected, match=message):
        plugin.job_message(_job(args), "/job/main.cs")


def test_arguments_that_fit_pass_on_as_the_json_job_message() -> None:
    plugin = Registry().get("csharp").plugin
    args = {"quantity": 1, "ratio": 2, "tier": 1, "limit": None, "to": {"City": "x"}}
    message = json.loads(plugin.job_message(_job(args), "/s"))
    assert message == {"entry_point": "Main", "args": args, "source": "/s"}


def _job(args: dict[str, Any]) -> Any:
    from gristmill.config import DEFAULT_LIMITS
    from gristmill.model import Job

    return Job(
        id="j", language="csharp", code=CODE, entry_point="Main", args=args, limits=DEFAULT_LIMITS
    )
