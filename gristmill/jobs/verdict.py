"""Decides a job's verdict from what happened, in one place, in a fixed order.

The evidence, most specific first: the sandbox failing to start; our own stop
(cancel, output cap); the kernel's accounting (an OOM kill, the pids limit
refusing a fork); our clocks (CPU, wall); then the program's own report on the
result channel, its signal, its exit status. Exit code 137 alone means nothing.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from gristmill.isolation.backend import SandboxExit, StopReason
from gristmill.jobs.envelope import Envelope, text_to_json
from gristmill.languages.spec import ResultFallback
from gristmill.model import JobError, Output, Verdict


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    result_json: str = ""
    error: JobError | None = None
    detail: str = ""


def _last_line(output: Output) -> str:
    lines = output.data.decode(errors="replace").rstrip("\n").splitlines()
    return lines[-1] if lines else ""


def _signal_name(number: int) -> str:
    """SIGSEGV and its kind by name; a real-time signal by number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _succeeded(end: SandboxExit, envelope: Envelope) -> bool:
    return end.exit_code == 0 and end.stopped_for is None and envelope.error is None


def decide(
    end: SandboxExit,
    envelope: Envelope,
    stdout: Output,
    stderr: Output,
    fallback: ResultFallback,
    cpu_time_ms: int,
) -> Decision:
    """The verdict of a job that ended as `end`; `cpu_time_ms` is its CPU-time limit."""
    if end.setup_error:
        return Decision(Verdict.SANDBOX_ERROR, detail=end.setup_error)
    stop = end.stopped_for
    if stop is StopReason.CANCEL:
        return Decision(Verdict.CANCELLED, detail="cancelled while running")
    if stop is StopReason.OUTPUT or stdout.truncated or stderr.truncated:
        which = "stdout" if stdout.truncated else "stderr"
        return Decision(Verdict.OUTPUT_LIMIT, detail=f"{which} went past the output cap")
    if stop is StopReason.NETWORK:
        return Decision(Verdict.NETWORK_LIMIT, detail="the network bytes cap ran out")
    if not _succeeded(end, envelope):
        if end.oom_killed:
            return Decision(Verdict.MEMORY_LIMIT, detail="the kernel OOM-killed the job")
        if stop is StopReason.MEMORY:
            return Decision(
                Verdict.MEMORY_LIMIT,
                detail="the job thrashed at its memory limit: its files evicted and read again",
            )
        if stop is StopReason.SOCKET_MEMORY:
            return Decision(
                Verdict.MEMORY_LIMIT,
                detail="the job's socket buffers, with its memory, filled its memory limit",
            )
        if end.pids_limit_hit:
            return Decision(Verdict.PROCESS_LIMIT, detail="a fork failed at the process limit")
    if stop is StopReason.CPU_TIME or (
        # RLIMIT_CPU's SIGXCPU, not one the job sent itself: the time was really used.
        end.signal == signal.SIGXCPU
        and cpu_time_ms
        and end.user_cpu_ns + end.system_cpu_ns >= cpu_time_ms * 1_000_000
    ):
        return Decision(Verdict.CPU_LIMIT, detail="the CPU-time limit ran out")
    if stop is StopReason.WALL_TIME:
        return Decision(Verdict.TIMEOUT, detail="the wall-time limit ran out")
    if envelope.error is not None:
        return Decision(envelope.error_verdict, error=envelope.error)
    if end.signal:
        if end.signal == signal.SIGSYS:
            return Decision(
                Verdict.SYSCALL_DENIED, detail="killed by SIGSYS: a refused system call"
            )
        return Decision(Verdict.KILLED_BY_SIGNAL, detail=f"killed by {_signal_name(end.signal)}")
    if end.exit_code != 0:
        tail = _last_line(stderr)
        message = f"exited with status {end.exit_code}" + (f": {tail}" if tail else "")
        return Decision(Verdict.ERROR, error=JobError("ExitStatus", message))
    if envelope.malformed:
        return Decision(Verdict.ERROR, error=JobError("ProtocolError", envelope.malformed))
    if envelope.result_json is not None:
        return Decision(Verdict.SUCCESS, result_json=envelope.result_json)
    if fallback is ResultFallback.LAST_STDOUT_LINE and _last_line(stdout):
        return Decision(Verdict.SUCCESS, result_json=text_to_json(_last_line(stdout)))
    return Decision(Verdict.SUCCESS, result_json="null")
