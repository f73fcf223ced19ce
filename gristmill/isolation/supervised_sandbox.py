"""One supervised sandbox, seen from the service through its pipes (either backend's).

The asyncio side of a job: its streams, its hand-over, its supervisor's report
(`nsjail_supervisor.c`) and its end; the jail itself is built and supervised by the
fork server's children (`forkserver.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
from pathlib import Path
from typing import Any

from gristmill.isolation import files_out
from gristmill.isolation.backend import SandboxExit, StopReason
from gristmill.isolation.cgroups import JobCgroup
from gristmill.isolation.jail import JailSpec, copy_job_files
from gristmill.isolation.nsjail import log_outcome
from gristmill.model import Limits

STREAM_LIMIT = 1 << 20


async def reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
    )
    return reader


async def _write_all(fd: int, data: bytes) -> None:
    """Writes `data` to the pipe `fd` as the program reads it, then closes it (EOF)."""
    if not data:
        os.close(fd)
        return
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", 0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    try:
        writer.write(data)
        await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program ended without reading it all; its exit tells why
    finally:
        writer.close()


def _supervisor_gone(pid: int, cgroup: JobCgroup | None, timeout_s: float = 5.0) -> None:
    """Blocks until the supervisor `pid` has exited (its namespaces torn down: the job's
    tmpfs, under nsjail, with them), then kills what is left in the job's group and
    removes it. Run on a thread, off the outcome's path (~1 ms a job), which finishes
    even when its event loop does not.

    A supervisor exits only once its jail's pid 1 has been reaped, and the kernel ends
    every process of a pid namespace before its pid 1: nothing of the job is left then.
    A supervisor reports a program's end before that (the rest of its jail killed, and
    going): this is where the service makes sure of it, and of a supervisor that has not
    exited in `timeout_s`."""
    if pid:
        with contextlib.suppress(ProcessLookupError):
            pidfd = os.pidfd_open(pid)
            try:
                # poll, not select: a busy server's descriptors pass select's 1024.
                exited = select.poll()
                exited.register(pidfd, select.POLLIN)
                # A supervisor still there after this is reported by the group's removal.
                exited.poll(timeout_s * 1000)
            finally:
                os.close(pidfd)
    if cgroup is not None:
        cgroup.kill_all()
        cgroup.remove()


def _read_exit(report: dict[str, Any]) -> dict[str, Any]:
    """A supervisor's exit report, with the program's end read from nsjail's log, which
    the supervisor sends as it is under nsjail (`nsjail_supervisor.c`)."""
    if "nsjail_log" not in report:
        return report
    end = dict(report)
    outcome = log_outcome(end.pop("nsjail_log"), end.pop("ready", False), end.pop("usage", {}))
    if "error" in outcome:
        end["setup_error"] = outcome["error"]
    else:
        end.update(outcome)
    return end


def _take_files_out(job_dir: str, workspace: str) -> dict[str, Any]:
    """The files the job asked for, from its tmpfs (`job_dir`, the supervisor's descriptor
    of it) into `workspace`; what was done, for `SandboxExit.files_out_overflow`."""
    try:
        fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return files_out.collect(fd, workspace)
        finally:
            os.close(fd)
    except (OSError, ValueError, KeyError) as error:
        return {"files": 0, "bytes": 0, "overflow": f"files could not be taken out: {error}"}


class SupervisedSandbox:
    """One job's sandbox, seen from the service through its pipes."""

    def __init__(
        self,
        readers: dict[str, asyncio.StreamReader],
        job_fd: int,
        stdin_fd: int,
        control_fd: int,
        spec: JailSpec,
        cgroup: JobCgroup | None,
        cleanups: set[asyncio.Future[None]],
        live: dict[asyncio.Future[None], SupervisedSandbox],
        overhead_processes: int = 0,
        memory_limit: int = 0,
    ) -> None:
        self.stdout = readers["stdout"]
        self.stderr = readers["stderr"]
        self.result = readers["result"]
        self._report = readers["report"]
        self._job_fd = job_fd
        self._stdin_fd = stdin_fd
        self._control_fd = control_fd
        self._spec = spec
        # A warm sandbox's tmpfs, as this process can open it: the supervisor's descriptor.
        self._job_dir = ""
        self._cgroup = cgroup
        self._cleanups = cleanups
        self._overhead = overhead_processes
        # The memory limit its group was made with.
        self._memory_limit = memory_limit
        self._started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._handed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._exit: dict[str, Any] | None = None
        # Set by the supervisor's exit report, or by the report's end without one.
        self._ended = asyncio.Event()
        self._waited: asyncio.Future[SandboxExit] | None = None
        self._stop_reason: StopReason | None = None
        # The backend holds the sandbox until its report ends, at the supervisor's exit,
        # after the outcome: asyncio's pipe protocol holds the report's reader weakly, and
        # a caller dropping the sandbox at its outcome would leave the reader pending to
        # the garbage collector ("Task was destroyed but it is pending!").
        reading = asyncio.ensure_future(self._read_report())
        live[reading] = self
        reading.add_done_callback(live.pop)

    async def _read_report(self) -> None:
        try:
            async for line in self._report:
                message = json.loads(line.decode(errors="replace"))
                if message["type"] == "started" and not self._started.done():
                    self._job_dir = message.get("job_dir", "")
                    self._started.set_result(message["pid"])
                elif message["type"] == "handed" and not self._handed.done():
                    self._handed.set_result(True)
                elif message["type"] == "exit":
                    self._exit = message
                    self._ended.set()
        finally:
            # Whatever ended the report (its end, or a line that is not a report: a bug,
            # said by the task's exception), the sandbox's waiters are not left waiting.
            self._ended.set()
            if not self._started.done():
                self._started.set_result(0)
            if not self._handed.done():
                self._handed.set_result(False)

    async def started(self) -> int:
        return await asyncio.shield(self._started)

    async def hand_over(self, limits: Limits, inline: bool = True) -> bool:
        """Gives a warm sandbox its job: its files, `limits` on its cgroup, its accounting
        reset, its clocks through its supervisor. False if it died while it waited, or
        its tmpfs cannot take the files."""
        if self._ended.is_set() or (self._started.done() and not self._started.result()):
            # Gone: its supervisor's pid, in the path of its tmpfs, may be another's now.
            return False
        try:
            if inline:
                self._copy_files()
            else:
                await asyncio.to_thread(self._copy_files)
        except OSError:
            return False
        if self._cgroup is not None:
            try:
                self._cgroup.hand_over(
                    limits.memory_bytes - self._template_memory(),
                    limits.processes + self._overhead,
                    limits.cpu_millicores,
                )
            except OSError:
                return False  # e.g. it already uses more memory than the job may
        with contextlib.suppress(OSError):
            os.write(
                self._control_fd,
                f"go {limits.wall_time_ms} {limits.cpu_time_ms} {limits.network_bytes}\n".encode(),
            )
        return await asyncio.shield(self._handed)

    def _template_memory(self) -> int:
        """What a sandbox forked from a template had its memory limit lowered by at its
        start (`template._charge_template_memory`): its job's limit is lowered by as much."""
        if not self._spec.fork_template or self._cgroup is None:
            return 0
        try:
            lowered = int(self._cgroup.memory_files[1].read_text())
        except (OSError, ValueError):
            return 0
        return max(self._memory_limit - lowered, 0)

    def _copy_files(self) -> None:
        """The job's files into the sandbox's tmpfs. Copied here, not by the supervisor: a
        fresh fork of the fork server, it took 0.5 ms for a file that takes 0.03 ms in a
        process that has run the copy before (each object it first touches costs a page
        copied on write). The tmpfs is opened as root, then written through this
        process's own descriptor as the jail's user (`copy_job_files`)."""
        if not self._job_dir:
            raise FileNotFoundError("the sandbox reported no job directory")
        job_dir = os.open(self._job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            copy_job_files(self._spec, f"/proc/self/fd/{job_dir}")
        finally:
            os.close(job_dir)

    def memory_bytes(self) -> int:
        if self._cgroup is None:
            return 0
        try:
            return self._cgroup.memory_bytes()
        except OSError:
            return 0

    def busy(self) -> bool:
        return self._cgroup is not None and self._cgroup.busy()

    async def send_job(self, message: bytes, stdin: bytes = b"") -> None:
        await asyncio.gather(_write_all(self._job_fd, message), _write_all(self._stdin_fd, stdin))

    def stop(self, reason: StopReason) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        with contextlib.suppress(OSError):
            os.write(self._control_fd, f"{reason.value}\n".encode())

    async def wait(self) -> SandboxExit:
        """The sandbox's end, once its supervisor has reported it. Every call gets the same
        one (a caller past its wall limit stops the sandbox and waits again): the sandbox's
        descriptors are closed and its group accounted for once."""
        if self._waited is None:
            self._waited = asyncio.ensure_future(self._wait())
        return await asyncio.shield(self._waited)

    async def _wait(self) -> SandboxExit:
        try:
            await self._ended.wait()
            end = _read_exit(self._exit or {"setup_error": "the supervisor died"})
            if "collect_from" in end:
                # The supervisor keeps the job's tmpfs until `control` closes, below.
                workspace = str(Path(self._spec.job_dir).parent)
                end["files_out"] = await asyncio.to_thread(
                    _take_files_out, end["collect_from"], workspace
                )
        finally:
            os.close(self._control_fd)
            # Its number may be reused at once: a later stop() must write nowhere (EBADF).
            self._control_fd = -1
        stats = self._cgroup.stats() if self._cgroup is not None else None
        cleanup = asyncio.ensure_future(
            asyncio.to_thread(_supervisor_gone, end.get("pid", 0), self._cgroup)
        )
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)
        return self._decode_exit(end, stats)

    def _decode_exit(self, m: dict[str, Any], stats: Any) -> SandboxExit:
        wait_status = m.get("wait_status")
        exit_code, sig = -1, 0
        if wait_status is not None:
            if os.WIFSIGNALED(wait_status):
                sig = os.WTERMSIG(wait_status)
            else:
                exit_code = os.waitstatus_to_exitcode(wait_status)
        elif m.get("stopped_for") or not m.get("setup_error"):
            sig = signal.SIGKILL  # the whole namespace died with its init
        stopped = m.get("stopped_for")
        reason = self._stop_reason if stopped == "cancel" else None
        return SandboxExit(
            exit_code=exit_code,
            signal=sig,
            stopped_for=reason or (StopReason(stopped) if stopped else None),
            setup_error=m.get("setup_error") or "",
            setup_ns=m.get("setup_ns", 0),
            run_ns=m.get("run_ns", 0),
            user_cpu_ns=stats.user_cpu_ns if stats else m.get("user_cpu_ns", 0),
            system_cpu_ns=stats.system_cpu_ns if stats else m.get("system_cpu_ns", 0),
            peak_memory_bytes=stats.peak_memory_bytes if stats else m.get("peak_memory_bytes", 0),
            peak_processes=stats.peak_processes if stats else 0,
            oom_killed=bool(stats and stats.oom_kills),
            pids_limit_hit=bool(stats and stats.pids_refused),
            files_out_overflow=(m.get("files_out") or {}).get("overflow", ""),
            network_sent_bytes=m.get("network_sent_bytes", 0),
            network_received_bytes=m.get("network_received_bytes", 0),
        )
