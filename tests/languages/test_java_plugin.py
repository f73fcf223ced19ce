"""Java's plugin without a server: the schema read with tree-sitter-java, the `//DEPS`
lines, the lockfile's rules, and what the build and the wrapper are handed."""

from __future__ import annotations

import json

import pytest

from gristmill.errors import InvalidRequest
from gristmill.languages import DependencyFailure, Registry, lockfiles
from gristmill.languages.plugin import ArgumentsRejected
from gristmill.model import Job, Limits

SHA = "a" * 64
CODE = """\
package com.acme;

import java.time.LocalDate;
import java.util.*;

public class Job {
    enum Level { LOW, HIGH }

    public record Point(int x, double y) {}

    public static class Order {
        public String item;
        public List<Integer> counts;
        private int hidden;
    }

    /**
     * Ships an order.
     * @param count how many
     *     of them
     * @param tags labels
     */
    public static Object main(int count, String name, List<Integer> xs, Map<String, Double> m,
                              Level level, Point p, Order order, Optional<String> note,
                              LocalDate day, byte[] blob, long[] many, Set<String> tags,
                              java.math.BigInteger big, String... rest) {
        return null;
    }

    public static void main(String[] argv) {}
}
"""


@pytest.fixture(scope="module")
def plugin():
    return Registry().get("java").plugin


def job(code: str, args: dict[str, object], entry_point: str = "main") -> Job:
    limits = Limits(wall_time_ms=1000, memory_bytes=1 << 28, cpu_time_ms=1000,
                    processes=16, output_bytes=1 << 20)  # fmt: skip
    return Job(id="j", language="java", code=code, entry_point=entry_point, args=args,
               limits=limits)  # fmt: skip


def test_the_schema_has_every_parameter_with_its_type(plugin):
    schema = plugin.describe(CODE, "main")
    properties = schema["properties"]
    assert schema["description"] == "Ships an order."
    assert properties["count"] == {"type": "integer", "description": "how many of them"}
    assert properties["name"] == {"type": "string"}
    assert properties["xs"] == {"type": "array", "items": {"type": "integer"}}
    assert properties["m"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert properties["level"] == {"type": "string", "enum": ["LOW", "HIGH"]}
    assert properties["p"] == {
        "type": "object",
        "title": "Point",
        "properties": {"x": {"type": "integer"}, "y": {"type": "number"}},
        "required": ["x", "y"],
    }
    assert properties["order"]["properties"] == {
        "item": {"type": "string"},
        "counts": {"type": "array", "items": {"type": "integer"}},
    }
    assert properties["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert properties["day"] == {"type": "string", "format": "date"}
    assert properties["blob"] == {"type": "string", "contentEncoding": "base64"}
    assert properties["many"] == {"type": "array", "items": {"type": "integer"}}
    assert properties["tags"]["uniqueItems"] is True
    assert properties["big"] == {"type": "integer"}
    assert properties["rest"] == {"type": "array", "items": {"type": "string"}}
    assert "note" not in schema["required"] and "count" in schema["required"]


def test_a_recursive_record_does_not_recurse_for_ever(plugin):
    code = "public class Main {\n  record Node(int v, java.util.List<Node> kids) {}\n" \
           "  public static int main(Node n) { return 1; }\n}\n"  # fmt: skip
    node = plugin.describe(code, "main")["properties"]["n"]
    assert node["properties"]["kids"] == {"type": "array"}


@pytest.mark.parametrize(
    ("code", "field"),
    [
        ("public class Main { public static int main( { return 1; } }", "code"),
        ("public class Main { public static void main(String[] a) {} }", "entry_point"),
        ("public class Main { static int main() { return 1; } }", "entry_point"),
        ("class Main { int x = " + "(" * 50_000 + "1" + ")" * 50_000 + "; }", "entry_point"),
        ("\udcff public class Main {}", "code"),
        ("class A {}\n" * 400_000, "code"),
    ],
)
def test_code_without_an_entry_point_or_that_does_not_parse_is_invalid(plugin, code, field):
    with pytest.raises(InvalidRequest) as raised:
        plugin.describe(code, "main")
    assert raised.value.field == field


def test_the_job_message_names_the_class_and_refuses_arguments_that_do_not_fit(plugin):
    message = json.loads(plugin.job_message(job(CODE, {"count": 1}), "/job/Main.java"))
    assert message["class"] == "com.acme.Job"
    assert message["source"] == "/job/Main.java"
    simple = "public class Main {\n  public static int main(int a, java.util.Optional<String> b) " \
             "{ return a; }\n}\n"  # fmt: skip
    plugin.job_message(job(simple, {"a": 1}), "/job/Main.java")
    with pytest.raises(ArgumentsRejected, match="missing argument 'a'"):
        plugin.job_message(job(simple, {"b": "x"}), "/job/Main.java")
    with pytest.raises(ArgumentsRejected, match="unknown argument 'c'"):
        plugin.job_message(job(simple, {"a": 1, "c": 2}), "/job/Main.java")


def test_the_build_gets_the_code_under_the_public_class_name(plugin):
    files = plugin.build_files(job(CODE, {}))
    assert files["gristmill-src/Job.java"] == CODE.encode()
    assert files["gristmill-class"] == b"com.acme.Job"
    broken = plugin.build_files(job("public class Oops {", {}))
    assert set(broken) == {"gristmill-src/Main.java", "gristmill-class"}


def test_deps_lines_are_the_dependencies(plugin):
    code = (
        "//DEPS com.google.code.gson:gson:2.10.1\n"
        "//DEPS org.slf4j:slf4j-api:2.0.9, com.google.code.gson:gson:2.10.1\n"
        "// DEPS not:a:dependency\n"
        "public class Main {}\n"
    )
    found = plugin.dependencies(code)
    assert [d.requirement for d in found] == [
        "com.google.code.gson:gson:2.10.1",
        "org.slf4j:slf4j-api:2.0.9",
    ]
    assert found[0].where == "//DEPS, line 1"


@pytest.mark.parametrize(
    "line", ["//DEPS gson", "//DEPS g:a:[1.0,2.0)", "//DEPS g:a:1.0@zip", "//DEPS https://x/y:a:1"]
)
def test_a_deps_line_that_is_not_an_exact_coordinate_is_a_dependency_failure(plugin, line):
    with pytest.raises(DependencyFailure, match="group:artifact:version"):
        plugin.dependencies(f"{line}\npublic class Main {{}}\n")


def test_the_lockfile_holds_only_pinned_artifacts_with_hashes(plugin):
    resolver = plugin.resolver()
    resolver.check_lockfile(f"# comment\ncom.google.code.gson:gson:2.10.1 sha256:{SHA}\n")
    for bad in (
        "com.google.code.gson:gson:2.10.1\n",
        f"com.google.code.gson:gson:2.10.1 sha256:{SHA} --repo=http://evil\n",
        f"http://evil/x.jar sha256:{SHA}\n",
        f"g:a:1 sha256:{SHA}\n-Dmaven.repo.remote=http://evil\n",
        "# only a comment\n",
    ):
        with pytest.raises(lockfiles.LockfileRefused):
            resolver.check_lockfile(bad)
