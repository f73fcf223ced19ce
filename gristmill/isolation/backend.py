"""The interface every sandbox backend implements, and the values it trades in.

A backend takes a `SandboxPlan` (what to run, seen through which profile, under
which limits) and starts it; the returned `Sandbox` is handed its job message
separately, so that a sandbox and its interpreter can be started ahead of demand.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gristmill.isolation.egress import EgressPolicy
from gristmill.isolation.profile import SandboxProfile
from gristmill.model import Limits


class StopReason(enum.Enum):
    """Why the supervisor stopped a job before it ended by itself."""

    WALL_TIME = "wall_time"
    CPU_TIME = "cpu_time"
    OUTPUT = "output"
    CANCEL = "cancel"
    # Stuck at the process limit: forks kept failing (Bash alone retries for 15 s).
    PROCESSES = "processes"
    # Past the job's cap on network bytes (`Limits.network_bytes`).
    NETWORK = "network"
    # Thrashing at the memory limit, which the kernel's OOM killer lets go on (the supervisor).
    MEMORY = "memory"
    # Socket buffers that, with its memory, fill the job's memory limit (the supervisor's rule).
    SOCKET_MEMORY = "socket_memory"


@dataclass(frozen=True)
class SandboxPlan:
    profile: SandboxProfile
    argv: tuple[str, ...]
    env: Mapping[str, str]
    # Host directory mounted read-write at /job, the working directory.
    job_dir: Path
    # Empty host directory the backend may build the jail's root on.
    root_dir: Path
    limits: Limits
    # Started ahead of its job: the program waits; `Sandbox.hand_over` brings the job's
    # files (written into `job_dir` first) and limits, and `limits` are the pool's.
    warm: bool = False
    # Where a network-on sandbox may connect; None: the default deny list only.
    egress: EgressPolicy | None = None


@dataclass(frozen=True)
class SandboxExit:
    """How the sandboxed program ended, as the supervisor saw it."""

    exit_code: int
    signal: int
    stopped_for: StopReason | None
    # Set when the sandbox could not be built or the program not started.
    setup_error: str
    setup_ns: int
    run_ns: int
    user_cpu_ns: int
    system_cpu_ns: int
    peak_memory_bytes: int
    peak_processes: int
    # From the kernel's accounting (the job's cgroup), when the backend has one.
    oom_killed: bool
    pids_limit_hit: bool
    # Why not every file the job asked to get back was taken out (`files_out`), or "".
    files_out_overflow: str = ""
    # Through a network-on sandbox's own interface, frames' headers included.
    network_sent_bytes: int = 0
    network_received_bytes: int = 0


@dataclass(frozen=True)
class SandboxInfo:
    backend: str
    enforced_limits: tuple[str, ...]
    detail: str


class Sandbox(Protocol):
    """One started sandbox. Its program reads the job message on fd 4."""

    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    # The result channel: what the wrapper wrote on fd 3.
    result: asyncio.StreamReader

    async def started(self) -> int:
        """Waits until the program runs (or failed to start); its supervisor's pid."""
        ...

    async def hand_over(self, limits: Limits, inline: bool = True) -> bool:
        """A warm sandbox's job: its files (now in the plan's `job_dir`) are copied in (on
        the caller's thread if `inline`: a few small ones), `limits` applied, its clocks
        started; False if the sandbox died while it waited or cannot take the files."""
        ...

    def memory_bytes(self) -> int:
        """The memory its processes and files hold now; 0 where nothing counts it."""
        ...

    def busy(self) -> bool:
        """Whether one of its threads runs or waits for a CPU (its program still starts,
        or works); False where nothing tells."""
        ...

    async def send_job(self, message: bytes, stdin: bytes = b"") -> None:
        """Hands the job to the waiting program: `message` on its fd 4 and `stdin` on its
        fd 0, each closed once written (or once the program is gone)."""
        ...

    def stop(self, reason: StopReason) -> None:
        """Kills every process of the sandbox; `wait` then reports `reason`."""
        ...

    async def wait(self) -> SandboxExit:
        """Waits until every process of the sandbox is gone."""
        ...


class SandboxBackend(Protocol):
    name: str

    def info(self) -> SandboxInfo: ...

    async def start(self, plan: SandboxPlan) -> Sandbox: ...

    async def close(self) -> None: ...
