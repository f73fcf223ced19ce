"""TypeScript's plugin on its own: the parameters' JSON Schema (Describe), the checks
of arguments before anything runs, and the dependencies read from the imports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gristmill.errors import InvalidRequest
from gristmill.languages.plugin import ArgumentsRejected
from gristmill.languages.registry import Registry
from gristmill.model import Job, Limits

PLUGIN = Registry().get("typescript").plugin


def describe(code: str, entry_point: str = "main") -> dict[str, Any]:
    return dict(PLUGIN.describe(code, entry_point))


def properties(code: str) -> dict[str, Any]:
    found: dict[str, Any] = describe(code)["properties"]
    return found


def test_the_basic_types_optional_and_defaulted_parameters():
    schema = describe(
        'export async function main(a: number, b: string = "x", c?: boolean, d = 3, e = 1.5) {}'
    )
    assert schema["properties"] == {
        "a": {"type": "number"},
        "b": {"type": "string", "default": "x"},
        "c": {"type": "boolean"},
        "d": {"type": "integer", "default": 3},
        "e": {"type": "number", "default": 1.5},
    }
    assert schema["required"] == ["a"]


def test_arrays_tuples_records_and_object_types():
    found = properties(
        "export function main(xs: number[], ys: Array<string>, t: [number, string],"
        " r: Record<string, boolean>, o: { name: string; tags?: string[] }) {}"
    )
    assert found["xs"] == {"type": "array", "items": {"type": "number"}}
    assert found["ys"] == {"type": "array", "items": {"type": "string"}}
    assert found["t"]["prefixItems"] == [{"type": "number"}, {"type": "string"}]
    assert found["t"]["minItems"] == found["t"]["maxItems"] == 2
    assert found["r"] == {"type": "object", "additionalProperties": {"type": "boolean"}}
    assert found["o"] == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
    }


def test_literal_unions_and_enums_are_enums_and_an_enum_default_is_its_value():
    found = properties(
        'enum Color { Red = "red", Green = "green" }\n'
        "enum Level { Low, High }\n"
        'type Kind = "a" | "b";\n'
        "export function main(k: Kind, c: Color = Color.Green, l: Level, n: 1 | 2 | null,"
        ' m: "x" | "y" = "y") {}'
    )
    assert found["k"] == {"enum": ["a", "b"], "type": "string"}
    assert found["c"] == {"enum": ["red", "green"], "default": "green"}
    assert found["l"] == {"enum": [0, 1]}
    assert found["n"] == {"enum": [1, 2, None]}
    assert found["m"] == {"enum": ["x", "y"], "type": "string", "default": "y"}


def test_dates_interfaces_nullable_and_the_fallback():
    found = properties(
        "interface Opts {\n  /** how many */\n  retries: number;\n  label?: string;\n}\n"
        "export function main(when: Date, o: Opts, n: number | null, x: any,"
        " w: Map<string, number>, u: string | number) {}"
    )
    assert found["when"] == {"type": "string", "format": "date-time"}
    assert found["o"]["properties"]["retries"] == {"type": "number", "description": "how many"}
    assert found["o"]["required"] == ["retries"]
    assert found["n"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    assert found["x"] == {} and found["w"] == {}
    assert found["u"] == {"anyOf": [{"type": "string"}, {"type": "number"}]}


def test_doc_comment_gives_descriptions_and_arrow_functions_are_found():
    schema = describe(
        "/**\n * Sends a greeting.\n * @param name who to greet\n */\n"
        "export const main = async (name: string, times = 1) => name;\n"
    )
    assert schema["description"] == "Sends a greeting."
    assert schema["properties"]["name"] == {"type": "string", "description": "who to greet"}
    assert schema["properties"]["times"] == {"type": "integer", "default": 1}


def test_no_such_function_and_code_that_does_not_parse_are_invalid_requests():
    with pytest.raises(InvalidRequest, match="entry_point"):
        describe("export function other() {}")
    with pytest.raises(InvalidRequest, match="line 2"):
        describe("export function main() {\n  return (;\n}\n")


@pytest.mark.parametrize(
    "code",
    [
        "export function main(a: number) {}\n" + "// padding\n" * 200_000,
        "export function main(a: " + "Array<" * 5000 + "number" + ">" * 5000 + ") {}",
        "export function main(a: " + "(" * 20000 + "number" + ")" * 20000 + ") {}",
        "export const x = " + "[" * 50000 + "]" * 50000 + ";\nexport function main() {}",
        b"export function main(a: string = '\xff\xfe') {}".decode("utf-8", "surrogateescape"),
        "type A = B; type B = A;\nexport function main(a: A) {}",
    ],
    ids=["huge", "deep generics", "deep parentheses", "deep arrays", "invalid utf-8", "cycle"],
)
def test_hostile_code_is_answered_not_crashed_on(code):
    try:
        schema = describe(code)
    except InvalidRequest:
        return
    assert schema["type"] == "object"


def job(code: str, args: dict[str, Any], entry_point: str = "main") -> Job:
    limits = Limits(
        wall_time_ms=1000, memory_bytes=1 << 28, cpu_time_ms=1000, processes=8, output_bytes=1024
    )
    return Job(
        id="t", language="typescript", code=code, args=args, entry_point=entry_point, limits=limits
    )


def message(code: str, args: dict[str, Any]) -> dict[str, Any]:
    sent: dict[str, Any] = json.loads(PLUGIN.job_message(job(code, args), "/job/main.ts"))
    return sent


def test_the_job_message_names_the_parameters_in_order_and_their_conversions():
    sent = message(
        'import _ from "lodash@4";\n'
        'export function main(a: number, n: bigint, d: Date, s = "x") {}',
        {"a": 1, "n": 2**70, "d": "2024-01-01"},
    )
    assert sent["parameters"] == ["a", "n", "d", "s"]
    assert sent["bigint"] == ["n"] and sent["date"] == ["d"]
    assert sent["versioned_imports"] == {"lodash@4": "lodash"}
    assert sent["args"]["n"] == 2**70


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"a": 1, "zzz": 2}, "zzz"),
        ({}, "'a'"),
        ({"a": "one"}, "'a'"),
        ({"a": 1, "k": "c"}, "'k'"),
        ({"a": 1, "o": {"n": "x"}}, "'o'"),
        ({"a": 1, "xs": [1, "2"]}, "'xs'"),
    ],
)
def test_arguments_that_do_not_fit_are_refused_naming_the_argument(args, named):
    code = (
        'export function main(a: number, k: "a" | "b" = "a", o?: { n: number },'
        " xs: number[] = []) {}"
    )
    with pytest.raises(ArgumentsRejected, match=named):
        message(code, args)


def test_code_tree_sitter_cannot_read_is_left_to_bun():
    sent = message("export function main(a: number {\n}\n", {"a": 1})
    assert sent["parameters"] is None


def test_dependencies_from_imports():
    code = """\
import _ from "lodash@4";
import fp from "lodash/fp";
import { z } from "zod";
import type { Foo } from "@scope/types/deep/path";
export { x } from "@scope/pkg@^1.2";
import fs from "fs";
import { readFile } from "node:fs/promises";
import { serve } from "bun";
import { Database } from "bun:sqlite";
import local from "./helper";
import other from "helper";
const dynamic = await import("left-pad");
const required = require("is-odd");
"""
    found = PLUGIN.dependencies(code, ["helper/index.ts"])
    assert [(d.name, d.requirement) for d in found] == [
        ("lodash", "lodash@4"),
        ("zod", "zod"),
        ("@scope/types", "@scope/types"),
        ("@scope/pkg", "@scope/pkg@^1.2"),
        ("left-pad", "left-pad"),
        ("is-odd", "is-odd"),
    ]
    assert found[0].where == "import 'lodash@4', line 1"


def test_a_version_that_is_not_a_registry_range_is_refused():
    from gristmill.languages.errors import DependencyFailure

    with pytest.raises(DependencyFailure, match="not a version range"):
        PLUGIN.dependencies('import x from "lodash@file:..";\nexport function main() {}')


def test_a_package_json_among_the_files_declares_the_dependencies_instead_of_the_imports():
    manifest = b'{"dependencies": {"lodash": "^4.17.0", "@types/node": "20"}}'
    found = PLUGIN.job_dependencies('import z from "zod";', {"package.json": manifest})
    assert [(d.name, d.requirement, d.source.name) for d in found] == [
        ("lodash", "lodash@^4.17.0", "DECLARED"),
        ("@types/node", "@types/node@20", "DECLARED"),
    ]
    assert [d.name for d in PLUGIN.job_dependencies('import z from "zod";', {})] == ["zod"]


@pytest.mark.parametrize(
    "version",
    [
        "git+https://example.com/x.git",
        "file:../x",
        "link:x",
        "workspace:*",
        "npm:other@1",
        "https://example.com/x.tgz",
        "github:owner/repo",
    ],
)
def test_a_package_json_naming_anything_but_registry_ranges_is_refused(version):
    from gristmill.languages.errors import DependencyFailure

    manifest = json.dumps({"dependencies": {"lodash": version}}).encode()
    with pytest.raises(DependencyFailure, match="not a version range"):
        PLUGIN.job_dependencies("", {"package.json": manifest})


def test_a_default_export_stands_for_main():
    schema = describe("export default async function (a: number, b = 2) {}")
    assert schema["required"] == ["a"]
    with pytest.raises(InvalidRequest, match="entry_point"):
        describe("export default function () {}", "handler")
