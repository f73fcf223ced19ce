"""How an outcome is shown (gristmill.render): the JSON every `--json` and the queue's
`enqueue --wait` / `queue wait` print, with what a job wrote kept from driving a terminal."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest

from gristmill import render
from gristmill.v1 import runtime_pb2 as pb


@pytest.mark.attack("terminal: a job's output")
def test_json_escapes_every_control_character_a_job_wrote_and_stays_the_same_json(capsys):
    written = "\x1b]0;owned\x07 \x9b2J \x7f héllo"
    render.print_outcome(pb.Outcome(stdout=pb.Output(data=written.encode())), as_json=True)
    shown = capsys.readouterr().out
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert json.loads(shown)["stdout"]["data"] == written
    assert "héllo" in shown  # text beyond ASCII stays readable


def test_json_shows_a_queue_records_times_and_ids_as_text(capsys):
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    uid = uuid.uuid4()
    render.print_json({"enqueued_at": when, "uid": uid})
    assert json.loads(capsys.readouterr().out) == {"enqueued_at": str(when), "uid": str(uid)}


def test_the_verdict_line_is_the_result_on_stdout_or_the_error_on_stderr(capsys):
    render.print_outcome(pb.Outcome(verdict=pb.SUCCESS, result_json="42"), as_json=False)
    render.print_outcome(
        pb.Outcome(verdict=pb.ERROR, error=pb.JobError(name="ValueError", message="no")),
        as_json=False,
    )
    captured = capsys.readouterr()
    assert captured.out == "result: 42\n"
    assert captured.err == "ERROR: ValueError: no\n"
