"""The result channel's decoder: whatever a job writes there is a result, an error or
`malformed`, and never an exception of ours."""

from __future__ import annotations

import json

import pytest

from gristmill.jobs import envelope
from gristmill.model import Verdict


def test_a_result_keeps_big_integers_and_unicode():
    parsed = envelope.parse(
        b'{"result": {"n": 1180591620717411303424, "s": "\\u00e9\xf0\x9f\x98\x80"}}'
    )
    assert parsed.result_json is not None
    assert json.loads(parsed.result_json) == {"n": 2**70, "s": "é😀"}


def test_result_text_is_json_when_it_parses_and_a_string_otherwise():
    assert envelope.parse(b'{"result_text": "[1, 2]"}').result_json == "[1, 2]"
    assert envelope.parse(b'{"result_text": "hello"}').result_json == '"hello"'


def test_an_error_keeps_its_verdict_and_frames():
    raw = {
        "error": {"name": "Oops", "message": "m", "stack": [{"file": "main.py", "line": 3}]},
        "verdict": "INVALID_ARGUMENTS",
    }
    parsed = envelope.parse(json.dumps(raw).encode())
    assert parsed.error is not None
    assert (parsed.error.name, parsed.error.stack[0].line) == ("Oops", 3)
    assert parsed.error_verdict is Verdict.INVALID_ARGUMENTS


@pytest.mark.parametrize("line", [-1, "abc", 1e300, [1], 2**40, True])
def test_a_frame_line_outside_uint32_becomes_zero(line):
    raw = {"error": {"name": "E", "message": "", "stack": [{"line": line}]}}
    parsed = envelope.parse(json.dumps(raw).encode())
    assert parsed.error is not None
    assert parsed.error.stack[0].line == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,
        b'{"result": NaN}',
        b'{"result": 1e400}',
        b"not json",
        b"[1, 2]",
        b'{"other": 1}',
        b"\xff\xfe",
    ],
)
def test_anything_off_the_protocol_is_malformed(raw):
    parsed = envelope.parse(raw)
    assert parsed.malformed
    assert parsed.result_json is None


def test_lone_surrogates_never_reach_the_contract_as_invalid_utf8():
    parsed = envelope.parse(b'{"error": {"name": "\\ud800", "message": "a\\udfffb"}}')
    assert parsed.error is not None
    parsed.error.name.encode()
    parsed.error.message.encode()
    result = envelope.parse(b'{"result": "\\ud800"}').result_json
    assert result is not None
    result.encode()
    assert json.loads(result) == "\ud800"


def test_an_empty_channel_is_no_result_at_all():
    assert envelope.parse(b"  \n") == envelope.Envelope()
