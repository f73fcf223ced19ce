"""Python's Describe: the parameters' JSON Schema, as rich as a form-building UI needs."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill.errors import InvalidRequest
from gristmill.languages import Registry

PYTHON = Registry().get("python").plugin


def describe(code: str) -> dict[str, Any]:
    return dict(PYTHON.describe(code, "main"))


def test_types_defaults_and_required():
    schema = describe("def main(a: int, b: str = 'x', c=3, d=2.5, e=None, *, f: bool = True): ...")
    assert schema["required"] == ["a"]
    props = schema["properties"]
    assert props["a"] == {"type": "integer"}
    assert props["b"] == {"type": "string", "default": "x"}
    assert props["c"] == {"type": "integer", "default": 3}  # the type from the default
    assert props["d"] == {"type": "number", "default": 2.5}
    assert props["e"] == {"type": "null", "default": None}
    assert props["f"] == {"type": "boolean", "default": True}


def test_dates_bytes_and_uuids_are_formatted_strings():
    code = (
        "import datetime, uuid\n"
        "def main(when: datetime.datetime, day: datetime.date, blob: bytes, key: uuid.UUID): ..."
    )
    props = describe(code)["properties"]
    assert props["when"] == {"type": "string", "format": "date-time"}
    assert props["day"] == {"type": "string", "format": "date"}
    assert props["blob"] == {"type": "string", "contentEncoding": "base64"}
    assert props["key"] == {"type": "string", "format": "uuid"}


def test_literals_and_enums_are_enums_and_a_member_default_is_its_value():
    code = (
        "from enum import Enum\n"
        "from typing import Literal\n"
        "class Color(Enum):\n"
        "    RED = 'red'\n"
        "    BLUE = 'blue'\n"
        "def main(mode: Literal['fast', 'slow'], color: Color = Color.BLUE, n: Literal[1, 2] = 1):"
        " ..."
    )
    props = describe(code)["properties"]
    assert props["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert props["color"] == {"enum": ["red", "blue"], "type": "string", "default": "blue"}
    assert props["n"] == {"enum": [1, 2], "type": "integer", "default": 1}


def test_records_are_objects_with_their_properties():
    code = (
        "from dataclasses import dataclass, field\n"
        "from typing import TypedDict\n"
        "@dataclass\n"
        "class Point:\n"
        "    '''A point on the plane.'''\n"
        "    x: float\n"
        "    y: float = 0.0\n"
        "class Options(TypedDict, total=False):\n"
        "    verbose: bool\n"
        "    tags: list[str]\n"
        "def main(p: Point, opts: Options): ..."
    )
    props = describe(code)["properties"]
    assert props["p"] == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"type": "number", "default": 0.0}},
        "required": ["x"],
        "description": "A point on the plane.",
    }
    assert props["opts"]["required"] == []
    assert props["opts"]["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}


def test_containers_unions_and_optionals():
    code = (
        "from typing import Optional, Union\n"
        "def main(a: list[int], b: dict[str, float], c: tuple[int, str], d: tuple[int, ...],\n"
        "         e: Optional[int] = None, f: int | str = 1, g: Union[int, 'Unknown'] = 1): ..."
    )
    props = describe(code)["properties"]
    assert props["a"] == {"type": "array", "items": {"type": "integer"}}
    assert props["b"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["c"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert props["d"] == {"type": "array", "items": {"type": "integer"}}
    assert props["e"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["f"] == {"anyOf": [{"type": "integer"}, {"type": "string"}], "default": 1}
    assert props["g"] == {"default": 1}  # an unknown member makes the union any value


def test_descriptions_come_from_the_docstring():
    code = (
        "def main(name: str, count: int = 1):\n"
        "    '''Greets someone.\n\n"
        "    Args:\n"
        "        name: who to greet\n"
        "        count (int): how many times\n"
        "    '''\n"
    )
    schema = describe(code)
    assert schema["description"] == "Greets someone."
    assert schema["properties"]["name"]["description"] == "who to greet"
    assert schema["properties"]["count"]["description"] == "how many times"


def test_a_record_that_contains_itself_stops():
    code = (
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class Node:\n"
        "    child: 'Node | None' = None\n"
        "def main(n: Node): ..."
    )
    assert describe(code)["properties"]["n"]["type"] == "object"


@pytest.mark.parametrize(
    "code",
    [
        "def main(:\n",
        "x = " + "(" * 500 + ")" * 500 + "\ndef main(): ...\n",
        "def main(): ...\n\x00",
        "def main(a: '" + "list[" * 2000 + "int" + "]" * 2000 + "'): ...",
    ],
)
def test_hostile_code_is_a_request_error_or_a_schema_never_a_crash(code):
    try:
        schema = describe(code)
    except InvalidRequest as error:
        assert error.field == "code"
    else:
        assert schema["type"] == "object"
