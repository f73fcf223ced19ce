"""The verdict is decided from evidence in a fixed order, never from exit code 137 alone."""

from __future__ import annotations

import dataclasses
import signal

import pytest

from gristmill.isolation.backend import SandboxExit, StopReason
from gristmill.jobs.envelope import Envelope
from gristmill.jobs.verdict import Decision, decide
from gristmill.languages.spec import ResultFallback
from gristmill.model import JobError, Output, Verdict

CLEAN = SandboxExit(
    exit_code=0,
    signal=0,
    stopped_for=None,
    setup_error="",
    setup_ns=0,
    run_ns=0,
    user_cpu_ns=0,
    system_cpu_ns=0,
    peak_memory_bytes=0,
    peak_processes=0,
    oom_killed=False,
    pids_limit_hit=False,
)
KILLED = dataclasses.replace(CLEAN, exit_code=-1, signal=signal.SIGKILL)
NONE = ResultFallback.NONE
NOTHING = Envelope()
SILENT = Output()


def verdict(
    end: SandboxExit = CLEAN,
    envelope: Envelope = NOTHING,
    stdout: Output = SILENT,
    fallback: ResultFallback = NONE,
    cpu_time_ms: int = 1000,
) -> Decision:
    return decide(end, envelope, stdout, SILENT, fallback, cpu_time_ms)


def test_a_sandbox_that_did_not_start_is_sandbox_error():
    assert verdict(dataclasses.replace(KILLED, setup_error="no")).verdict is Verdict.SANDBOX_ERROR


def test_cancel_beats_everything_the_kill_caused():
    end = dataclasses.replace(KILLED, stopped_for=StopReason.CANCEL, oom_killed=True)
    assert verdict(end).verdict is Verdict.CANCELLED


def test_a_kill_with_an_oom_count_is_memory_limit_even_past_the_deadline():
    end = dataclasses.replace(KILLED, stopped_for=StopReason.WALL_TIME, oom_killed=True)
    assert verdict(end).verdict is Verdict.MEMORY_LIMIT


def test_our_stop_for_thrashing_at_the_memory_limit_is_memory_limit():
    decision = verdict(dataclasses.replace(KILLED, stopped_for=StopReason.MEMORY))
    assert decision.verdict is Verdict.MEMORY_LIMIT
    assert "thrashed" in decision.detail


def test_a_sigkill_without_evidence_is_killed_by_signal_not_memory():
    decision = verdict(KILLED)
    assert decision.verdict is Verdict.KILLED_BY_SIGNAL
    assert "SIGKILL" in decision.detail


def test_a_refused_fork_that_the_job_died_of_is_process_limit():
    end = dataclasses.replace(CLEAN, exit_code=1, pids_limit_hit=True)
    assert verdict(end).verdict is Verdict.PROCESS_LIMIT


def test_a_refused_fork_that_the_job_survived_is_success():
    end = dataclasses.replace(CLEAN, pids_limit_hit=True)
    assert verdict(end, Envelope(result_json="1")).verdict is Verdict.SUCCESS


def test_our_cpu_stop_is_cpu_limit_and_our_clock_is_timeout():
    assert verdict(dataclasses.replace(KILLED, stopped_for=StopReason.CPU_TIME)).verdict is (
        Verdict.CPU_LIMIT
    )
    assert verdict(dataclasses.replace(KILLED, stopped_for=StopReason.WALL_TIME)).verdict is (
        Verdict.TIMEOUT
    )


def test_sigxcpu_is_cpu_limit_only_when_the_cpu_time_was_used():
    spent = dataclasses.replace(KILLED, signal=signal.SIGXCPU, user_cpu_ns=2_000_000_000)
    assert verdict(spent).verdict is Verdict.CPU_LIMIT
    self_sent = dataclasses.replace(KILLED, signal=signal.SIGXCPU, user_cpu_ns=1_000_000)
    assert verdict(self_sent).verdict is Verdict.KILLED_BY_SIGNAL


def test_a_real_time_signal_is_named_by_number():
    decision = verdict(dataclasses.replace(KILLED, signal=40))
    assert decision.verdict is Verdict.KILLED_BY_SIGNAL
    assert decision.detail == "killed by signal 40"


def test_sigsys_is_syscall_denied():
    assert verdict(dataclasses.replace(KILLED, signal=signal.SIGSYS)).verdict is (
        Verdict.SYSCALL_DENIED
    )


def test_the_wrappers_error_keeps_its_verdict():
    envelope = Envelope(error=JobError("E", "m"), error_verdict=Verdict.INVALID_ARGUMENTS)
    assert verdict(dataclasses.replace(CLEAN, exit_code=1), envelope).verdict is (
        Verdict.INVALID_ARGUMENTS
    )


def test_a_non_zero_exit_is_error_with_the_last_stderr_line():
    end = dataclasses.replace(CLEAN, exit_code=3)
    decision = decide(end, Envelope(), Output(), Output(b"a\nboom\n"), NONE, 0)
    assert decision.verdict is Verdict.ERROR
    assert decision.error == JobError("ExitStatus", "exited with status 3: boom")


@pytest.mark.parametrize(
    ("stdout", "fallback", "result"),
    [
        (b'x\n{"a": 1}\n', ResultFallback.LAST_STDOUT_LINE, '{"a": 1}'),
        (b"hello\n", ResultFallback.LAST_STDOUT_LINE, '"hello"'),
        (b"hello\n", ResultFallback.NONE, "null"),
    ],
)
def test_without_a_result_the_languages_fallback_applies(stdout, fallback, result):
    decision = verdict(stdout=Output(stdout), fallback=fallback)
    assert (decision.verdict, decision.result_json) == (Verdict.SUCCESS, result)


def test_a_malformed_channel_is_a_protocol_error():
    decision = verdict(envelope=Envelope(malformed="bad"))
    assert decision.verdict is Verdict.ERROR
    assert decision.error is not None
    assert decision.error.name == "ProtocolError"


def test_output_past_the_cap_is_output_limit():
    decision = verdict(dataclasses.replace(KILLED, stopped_for=StopReason.OUTPUT))
    assert decision.verdict is Verdict.OUTPUT_LIMIT
