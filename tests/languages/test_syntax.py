"""The shared parser: a real grammar, bounded, hostile input answered as a request error."""

from __future__ import annotations

import contextlib

import pytest

from gristmill.errors import InvalidRequest
from gristmill.languages import syntax

GO = syntax.grammar("tree_sitter_go")


def test_a_function_is_found_with_its_parameters():
    root = syntax.parse(GO, "package inner\nfunc main(a int, b string) {}\n")
    [function] = syntax.children(root, "function_declaration")
    assert syntax.field_text(function, "name") == "main"
    assert syntax.field_text(function, "parameters") == "(a int, b string)"


def test_a_syntax_error_names_its_line():
    with pytest.raises(InvalidRequest, match="syntax error at line 3") as raised:
        syntax.parse(GO, "package inner\n\nfunc main( {\n")
    assert raised.value.field == "code"


def test_code_past_the_cap_is_refused_before_parsing():
    with pytest.raises(InvalidRequest, match="at most"):
        syntax.parse(GO, "//" + "x" * syntax.MAX_SOURCE_BYTES)


@pytest.mark.parametrize(
    "code",
    [
        "package inner\nvar x = " + "(" * 100_000 + "1" + ")" * 100_000,  # deep nesting
        'package inner\nvar s = "\udcff"\n',  # a lone surrogate: what invalid UTF-8 decodes to
        "\x00\xff" * 1000,
    ],
)
def test_hostile_input_parses_or_is_refused_never_crashes(code):
    with contextlib.suppress(InvalidRequest):
        syntax.parse(GO, code)
