"""Bash's parameters: `name="$1"` declarations, read with the Bash grammar."""

from __future__ import annotations

from gristmill.languages import Registry

BASH = Registry().get("bash").plugin


def test_declarations_in_their_forms_and_order_of_position():
    code = (
        'count="${2:-5}"\n'
        'name="$1"\n'
        "local flag=$3\n"
        'declare label=${4:-"a b"}\n'
        "literal='$5'\n"  # single quotes: the text "$5", not a parameter
        'mixed="x$6"\n'  # not the parameter alone
        "echo $name\n"
    )
    schema = BASH.describe(code, "main")
    assert list(schema["properties"]) == ["name", "count", "flag", "label"]
    assert schema["properties"]["count"] == {"type": "string", "default": "5"}
    assert schema["properties"]["label"]["default"] == "a b"
    assert schema["required"] == ["name", "flag"]


def test_the_first_declaration_of_a_position_wins():
    schema = BASH.describe('a="$1"\nb="$1"\n', "main")
    assert list(schema["properties"]) == ["a"]


def test_code_the_grammar_cannot_follow_still_gives_what_it_could_read():
    schema = BASH.describe('name="$1"\nif [[ ; then\n', "main")
    assert list(schema["properties"]) == ["name"]
