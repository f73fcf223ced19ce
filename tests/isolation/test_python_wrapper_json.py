"""The Python wrapper's JSON, read and written without `import json` (it costs every job
~6 ms), must be exactly `json.loads` and `json.dumps(..., allow_nan=False)`: same text,
same refusals with the same messages; and with no C accelerator, `json` itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

WRAPPER = Path(__file__).resolve().parents[2] / "runtimes" / "python" / "wrapper.py"


def _wrapper_namespace(*, accelerated: bool) -> dict[str, Any]:
    """The wrapper's functions, without running its `main()` (its last statement)."""
    source = WRAPPER.read_text()
    body, _, call = source.rpartition("\nmain()")
    assert not call.strip(), "the wrapper is expected to end with main()"
    namespace: dict[str, Any] = {"__name__": "gristmill_wrapper"}
    exec(compile(body, str(WRAPPER), "exec"), namespace)
    if not accelerated:
        namespace["make_scanner"] = namespace["make_encoder"] = None
    return namespace


class _Opaque:
    pass


_circular: list[object] = []
_circular.append(_circular)

VALUES: list[object] = [
    None,
    1,
    -(2**100),
    2**64 + 1,
    1.5,
    1e300,
    "plain",
    'é ☃ 𝄞 \u2028 \x00 "quoted" \\ \n',
    "\ud800",
    True,
    [1, [2, [3]], {}],
    {"a": {"b": [None, False]}, "n": 0.1},
    {3: "int key", 2.5: "float key", True: "bool key", None: "null key"},
    float("nan"),
    float("inf"),
    [float("-inf")],
    {"nested": [float("nan")]},
    {(1, 2): "tuple key"},
    {1, 2},
    _Opaque(),
    b"bytes",
    _circular,
]


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return "value", call()
    except Exception as error:  # the type and message are what must match
        return type(error).__name__, str(error)


@pytest.mark.parametrize("accelerated", [True, False], ids=["_json", "json"])
@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_dumps_is_json_dumps_without_nan(
    value: object, ensure_ascii: bool, accelerated: bool
) -> None:
    dumps = _wrapper_namespace(accelerated=accelerated)["_dumps"]
    expected = _outcome(lambda: json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False))
    assert _outcome(lambda: dumps(value, ensure_ascii=ensure_ascii)) == expected


MESSAGES = [
    b'{"entry_point": "main", "args": {"a": 1}, "source": "/job/main.py"}',
    b' \t\r\n{"big": 123456789012345678901234567890, "f": 1.25e-7} \n',
    '{"s": "é ☃ \\u00e9 \\ud83d\\ude00"}'.encode(),
    b'{"x": NaN, "y": Infinity, "z": -Infinity}',
    "\ufeff{}".encode(),
    '{"a": 1}'.encode("utf-16"),
    b"[1, 2] [3]",
    b'{"a": }',
    b"",
    b"   ",
    b'"\x01 control character"',
]


@pytest.mark.parametrize("accelerated", [True, False], ids=["_json", "json"])
@pytest.mark.parametrize("message", MESSAGES)
def test_loads_is_json_loads(message: bytes, accelerated: bool) -> None:
    loads = _wrapper_namespace(accelerated=accelerated)["_loads"]
    expected = _outcome(lambda: json.loads(message))
    got = _outcome(lambda: loads(message))
    # NaN != NaN: compare the repr of what was decoded.
    assert repr(got) == repr(expected)
