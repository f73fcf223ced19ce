"""The job and its outcome as plain typed values, independent of protobuf.

The gRPC layer converts to and from these at the boundary (`gristmill.server.convert`);
everything inside the service speaks only these types.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JsonValue = Any
"""A value that `json.dumps` accepts."""

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
"""The largest gRPC message either side accepts: an Outcome may carry two outputs of up to
64 MiB each and a result of up to 64 MiB (gRPC's own default, 4 MiB, would refuse them)."""


class Verdict(enum.Enum):
    """What happened to a job; names match the proto enum `gristmill.v1.Verdict`."""

    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
    TIMEOUT = "TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    CPU_LIMIT = "CPU_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    PROCESS_LIMIT = "PROCESS_LIMIT"
    KILLED_BY_SIGNAL = "KILLED_BY_SIGNAL"
    CANCELLED = "CANCELLED"
    SANDBOX_ERROR = "SANDBOX_ERROR"
    COMPILE_ERROR = "COMPILE_ERROR"
    DEPENDENCY_ERROR = "DEPENDENCY_ERROR"
    SYSCALL_DENIED = "SYSCALL_DENIED"
    NETWORK_LIMIT = "NETWORK_LIMIT"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job; zero means "the server's default" only at the boundary."""

    wall_time_ms: int
    memory_bytes: int
    cpu_time_ms: int
    processes: int
    output_bytes: int
    network: bool = False
    # CPU bandwidth in thousandths of a core, as a cgroup quota; 0 for none.
    cpu_millicores: int = 0
    # A network-on job's bytes sent plus received, past which it is stopped (NETWORK_LIMIT).
    network_bytes: int = 0
    # A network-on job's TCP connections, past which a connect() is refused.
    network_connections: int = 0


@dataclass(frozen=True)
class JobFile:
    path: str
    content: bytes
    executable: bool = False


class DependencySource(enum.Enum):
    """Where a dependency came from; names match the proto enum `DependencySource`."""

    DECLARED = "DECLARED"
    INFERRED = "INFERRED"


@dataclass(frozen=True)
class Dependency:
    """One package the code needs: its registry name and the requirement handed on."""

    name: str
    requirement: str
    source: DependencySource
    # Where it was found, for people: "import yaml, line 3".
    where: str = ""


@dataclass(frozen=True)
class Lockfile:
    """Pinned dependencies in the language's own format; the environment is built from it."""

    language: str
    format: str
    content: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """One validated job, limits already filled in from the server's defaults."""

    id: str
    language: str
    code: str
    entry_point: str
    args: Mapping[str, JsonValue]
    limits: Limits
    files: tuple[JobFile, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # When the caller stops waiting, on the `time.monotonic()` clock; None for never.
    # The wall limit is cut to it again just before the sandbox starts, so time spent
    # queued, resolving or building still leaves room to deliver a TIMEOUT outcome.
    deadline: float | None = None
    # Install exactly this, never resolve; None: resolve the code's dependencies first.
    lockfile: Lockfile | None = None
    # Narrows the server's egress policy for this job (`Job.network_allow` in the proto).
    network_allow: tuple[str, ...] = ()
    # The size of the request that carried it: what the service's own work on the job
    # (its dependencies, its job message, its files) grows with (`jobs.offload`).
    size_bytes: int = 0
    # The program's standard input.
    stdin: bytes = b""
    # Paths or globs under /job whose files the outcome brings back (`jobs.files_out`).
    output_files: tuple[str, ...] = ()
    # The caller's context, seen as GRISTMILL_CTX_<key> (`jobs.context`).
    context: Mapping[str, str] = field(default_factory=dict)
    # Run as a plain script with these positional arguments; None: call the entry point.
    script: tuple[str, ...] | None = None
    # Whom it runs for (`gristmill.server.tenants`): a token's or a certificate's name.
    # Job ids are the tenant's own: another tenant's same id is another job.
    tenant: str = ""


@dataclass(frozen=True)
class StackFrame:
    file: str
    line: int
    function: str = ""
    text: str = ""


@dataclass(frozen=True)
class JobError:
    name: str
    message: str
    stack: tuple[StackFrame, ...] = ()


@dataclass(frozen=True)
class Output:
    data: bytes = b""
    truncated: bool = False
    total_bytes: int = 0


@dataclass(frozen=True)
class Phases:
    queued_ms: int = 0
    prepare_ms: int = 0
    sandbox_setup_ms: int = 0
    run_ms: int = 0
    resolve_ms: int = 0
    install_ms: int = 0
    # Compiling, or waiting for another job compiling the same code (small when cached).
    build_ms: int = 0


@dataclass(frozen=True)
class Usage:
    wall_time_ms: int = 0
    user_cpu_ms: int = 0
    system_cpu_ms: int = 0
    peak_memory_bytes: int = 0
    processes: int = 0
    phases: Phases = Phases()
    network_sent_bytes: int = 0
    network_received_bytes: int = 0


@dataclass(frozen=True)
class EnvironmentInfo:
    """The installed dependencies a job ran with."""

    # False when this job built it; true when it was already there or another built it.
    cached: bool
    key: str


@dataclass(frozen=True)
class BuildInfo:
    """The compiled job a run used (or whose compilation failed)."""

    # False when this job compiled it; true when it was already there or another compiled it.
    cached: bool
    key: str


@dataclass(frozen=True)
class Outcome:
    job_id: str
    verdict: Verdict
    result_json: str = ""
    error: JobError | None = None
    stdout: Output = Output()
    stderr: Output = Output()
    exit_code: int = 0
    signal: int = 0
    usage: Usage = Usage()
    sandbox: str = ""
    detail: str = ""
    lockfile: Lockfile | None = None
    environment: EnvironmentInfo | None = None
    build: BuildInfo | None = None
    warm_sandbox: bool = False
    # The files of `Job.output_files` the job left, by path under /job.
    files: tuple[JobFile, ...] = ()


@dataclass(frozen=True)
class Resolution:
    """What `Resolve` answers: the dependencies found and their lockfile (None if none)."""

    dependencies: tuple[Dependency, ...]
    lockfile: Lockfile | None


@dataclass(frozen=True)
class PhaseEvent:
    """A phase of the job began: "resolve", "install", "build", "prepare", "sandbox_setup",
    "run", in that order.

    Repeated with the same name during "resolve", "install" and "build", `detail` is a
    progress line.
    """

    name: str
    detail: str = ""


@dataclass(frozen=True)
class StartedEvent:
    """The sandboxed program is running; `pid` is its supervisor's host pid."""

    pid: int


@dataclass(frozen=True)
class OutputEvent:
    """A chunk the program wrote, in order per stream, up to the output cap."""

    stream: str  # "stdout" or "stderr"
    data: bytes


JobEvent = PhaseEvent | StartedEvent | OutputEvent
