"""A job's outcome as Python types: the verdict as an enum, the result decoded from JSON."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from gristmill.model import JsonValue
from gristmill.v1 import runtime_pb2 as pb

__all__ = ["Outcome", "Verdict", "outcome_result"]


class Verdict(enum.IntEnum):
    """What happened to a job: the proto enum `gristmill.v1.Verdict`, as a Python enum."""

    VERDICT_UNSPECIFIED = 0
    SUCCESS = 1
    ERROR = 2
    INVALID_ARGUMENTS = 3
    TIMEOUT = 4
    MEMORY_LIMIT = 5
    CPU_LIMIT = 6
    OUTPUT_LIMIT = 7
    PROCESS_LIMIT = 8
    KILLED_BY_SIGNAL = 9
    CANCELLED = 10
    SANDBOX_ERROR = 11
    COMPILE_ERROR = 12
    DEPENDENCY_ERROR = 13
    SYSCALL_DENIED = 14
    NETWORK_LIMIT = 20


def outcome_result(outcome: pb.Outcome) -> JsonValue:
    """The job's result decoded from JSON (None when it returned none)."""
    return json.loads(outcome.result_json) if outcome.result_json else None


@dataclass(frozen=True)
class Outcome:
    """A job's outcome, typed: `proto` keeps the whole message (usage, lockfile, ...)."""

    job_id: str
    verdict: Verdict
    # The entry point's return value, decoded from JSON (None when it returned none).
    result: JsonValue
    # The user's error (name, message, stack) when the verdict is not SUCCESS; else None.
    error: pb.JobError | None
    # The job's output as text (invalid UTF-8 replaced); `proto.stdout.data` has the bytes.
    stdout: str
    stderr: str
    exit_code: int
    signal: int
    detail: str
    proto: pb.Outcome

    @property
    def files(self) -> dict[str, bytes]:
        """The files the job left that `output_files` asked for, by path under /job."""
        return {f.path: f.content for f in self.proto.files}

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.SUCCESS

    @property
    def usage(self) -> pb.Usage:
        return self.proto.usage

    @property
    def lockfile(self) -> pb.Lockfile | None:
        return self.proto.lockfile if self.proto.HasField("lockfile") else None

    @classmethod
    def from_proto(cls, message: pb.Outcome) -> Outcome:
        return cls(
            job_id=message.job_id,
            verdict=Verdict(message.verdict),
            result=outcome_result(message),
            error=message.error if message.HasField("error") else None,
            stdout=message.stdout.data.decode(errors="replace"),
            stderr=message.stderr.data.decode(errors="replace"),
            exit_code=message.exit_code,
            signal=message.signal,
            detail=message.detail,
            proto=message,
        )
