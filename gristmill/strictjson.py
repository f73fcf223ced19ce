"""JSON as RFC 8259 has it, for text that comes from outside: requests, jobs, servers.

Python's `json.loads` accepts NaN and Infinity, turns 1e400 into infinity, and lets
deep nesting escape as RecursionError; none of those is JSON, and each would reach a
caller as something other than a plain `ValueError`.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["loads", "schema_type"]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def loads(text: str | bytes) -> Any:
    """The value of `text`; any way it is not JSON is a `ValueError`."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError as error:
        raise ValueError("nested too deeply") from error


def schema_type(value: Any) -> str:
    """The JSON Schema type of a decoded JSON value (a tuple counts as an array); "" for
    anything JSON has no type for."""
    if value is None:
        return "null"
    for kind, name in _SCHEMA_TYPES:
        if isinstance(value, kind):
            return name
    return ""


# bool before int: a bool is an int to Python, never to JSON.
_SCHEMA_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    ((list, tuple), "array"),
    (dict, "object"),
)
