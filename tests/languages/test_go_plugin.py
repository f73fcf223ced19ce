"""Go's plugin: parameters read with tree-sitter-go, the generated entry file, the JSON
Schema, modules inferred and pinned, and the go.mod + go.sum lockfile's checks."""

from __future__ import annotations

import json

import pytest

from gristmill.errors import InvalidRequest
from gristmill.languages import DependencyFailure, Registry, ToolContext
from gristmill.languages.plugin import ArgumentsRejected
from gristmill.model import DependencySource, Job, Limits, Lockfile

CODE = """package inner

import (
\t"time"

\t"github.com/google/uuid"
\tyaml "gopkg.in/yaml.v3/sub"
)

//gristmill:require gopkg.in/yaml.v3 v3.0.1

type Color string

const (
\tRed  Color = "red"
\tBlue Color = "blue"
)

type Person struct {
\tName  string   `json:"name"`
\tAge   *int     `json:"age"`
\tTags  []string `json:"tags,omitempty"`
\tskip  int
\tDrop  int `json:"-"`
}

// main greets people.
func main(a, b int, s string, p Person, when time.Time, raw []byte,
\tm map[string]float64, c Color, opt *bool) (any, error) {
\treturn nil, nil
}
"""
SUM = "h1:" + "A" * 43 + "="


@pytest.fixture(scope="module")
def plugin():
    return Registry().get("go").plugin


def job(code: str = CODE, entry_point: str = "main", **args: object) -> Job:
    return Job("j", "go", code, entry_point, args, Limits(1000, 1 << 26, 1000, 8, 1 << 20))


def test_describe_reads_every_parameter_with_its_type(plugin):
    schema = plugin.describe(CODE, "main")
    props = schema["properties"]
    assert list(props) == ["a", "b", "s", "p", "when", "raw", "m", "c", "opt"]
    assert props["a"] == props["b"] == {"type": "integer"}
    assert props["when"] == {"type": "string", "format": "date-time"}
    assert props["raw"] == {"type": "string", "contentEncoding": "base64"}
    assert props["m"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["c"] == {"type": "string", "enum": ["red", "blue"]}
    assert props["p"] == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
    }
    assert schema["required"] == ["a", "b", "s", "p", "when", "raw", "m", "c"]
    assert schema["description"] == "main greets people."


@pytest.mark.parametrize(
    "code",
    ["package inner\nfunc main( {", "\udcff" * 10, "package inner\n" + "func f() {" * 5000],
)
def test_describe_refuses_code_that_does_not_parse(plugin, code):
    with pytest.raises(InvalidRequest):
        plugin.describe(code, "main")


def test_the_generated_entry_names_the_parameters_in_order(plugin):
    generated = plugin.build_files(job(entry_point="main"))
    text = generated["gristmill_entry.go"].decode()
    assert "package inner" in text
    assert "var GristmillEntry any = main" in text
    assert 'GristmillParams = []string{"a", "b", "s", "p", "when", "raw", "m", "c", "opt"}' in text


def test_an_entry_point_that_is_no_identifier_is_refused(plugin):
    with pytest.raises(ArgumentsRejected):
        plugin.build_files(job(entry_point="main; os.Exit(1)"))


def test_missing_and_unknown_arguments_are_judged_before_the_build(plugin):
    code = "package inner\nfunc main(a int, b *int) (int, error) { return a, nil }\n"
    with pytest.raises(ArgumentsRejected, match="'a'"):
        plugin.job_message(job(code, b=1), "/job/main.go")
    with pytest.raises(ArgumentsRejected, match="'zzz'"):
        plugin.job_message(job(code, a=1, zzz=2), "/job/main.go")
    message = json.loads(plugin.job_message(job(code, a=3.0), "/job/main.go"))
    assert message == {"a": 3}
    assert isinstance(message["a"], int)


def test_modules_come_from_pins_then_imports_outside_the_standard_library(plugin):
    found = plugin.dependencies(CODE)
    assert [(d.name, d.requirement, d.source) for d in found] == [
        ("gopkg.in/yaml.v3", "gopkg.in/yaml.v3 v3.0.1", DependencySource.DECLARED),
        ("github.com/google/uuid", "github.com/google/uuid", DependencySource.INFERRED),
    ]


def test_a_malformed_pin_is_a_dependency_failure(plugin):
    with pytest.raises(DependencyFailure, match="line 2"):
        plugin.dependencies("package inner\n//gristmill:require example.com/x latest\n")


def lockfile(go_mod: str, go_sum: str) -> Lockfile:
    return Lockfile("go", "go.mod+go.sum", f"-- go.mod --\n{go_mod}-- go.sum --\n{go_sum}")


GOOD_MOD = "module gristmill.job\n\ngo 1.26\n\nrequire github.com/google/uuid v1.6.0\n"
GOOD_SUM = f"github.com/google/uuid v1.6.0 {SUM}\ngithub.com/google/uuid v1.6.0/go.mod {SUM}\n"


def test_a_checked_lockfile_installs_exactly_its_pins(plugin):
    step = plugin.resolver().install(lockfile(GOOD_MOD, GOOD_SUM), ToolContext("go1.26"))
    assert "github.com/google/uuid v1.6.0" in step.files["go.mod"]
    assert step.files["go.sum"] == GOOD_SUM
    assert step.env["GOFLAGS"].startswith("-mod=readonly")


@pytest.mark.parametrize(
    ("go_mod", "go_sum", "message"),
    [
        (GOOD_MOD + "replace github.com/google/uuid => ../evil\n", GOOD_SUM, "'replace'"),
        (GOOD_MOD + "exclude github.com/google/uuid v1.5.0\n", GOOD_SUM, "'exclude'"),
        (GOOD_MOD.replace("gristmill.job", "example.com/x"), GOOD_SUM, "module must be"),
        (GOOD_MOD, "", "no hash"),
        (GOOD_MOD, "github.com/google/uuid v1.6.0 sha256:abc\n", "not a module hash"),
        (GOOD_MOD.replace("v1.6.0", "master"), GOOD_SUM, "not a pinned"),
    ],
)
def test_a_lockfile_with_anything_but_hashed_pins_is_refused(plugin, go_mod, go_sum, message):
    with pytest.raises(DependencyFailure, match=message):
        plugin.resolver().install(lockfile(go_mod, go_sum), ToolContext("go1.26"))


def test_builds_and_the_prime_step_share_one_environment_and_offline_flags():
    spec = Registry().get("go").spec.build
    assert spec is not None
    assert spec.prime == ("/bin/sh", "/gristmill/runtime/prime.sh")
    assert "-trimpath" in spec.env["GOFLAGS"] and "-mod=readonly" in spec.env["GOFLAGS"]
    assert spec.env["GOPROXY"] == "off"
