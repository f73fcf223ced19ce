"""The fork server: a single-threaded process that is the parent of every jail.

The gRPC server is threaded, and a threaded process must not do anything but
exec between fork and exec. So the service starts this module once as its own
process and sends it one message per job over a Unix socket: the `JailSpec` as
JSON plus the job's pipes as passed descriptors. For each, it forks a supervisor
(see `jail.py` for the tree) and goes back to listening.

The supervisor reports to the service on the `report` pipe, one JSON object a
line: `{"type": "started", ...}` once the program runs, then `{"type": "exit",
...}`. It kills the job on its wall-clock or CPU deadline, on a byte on the
`control` pipe (the stop reason, a line), and when the control pipe closes: if the
service dies, every job it started dies with it. When the job asked for files back
(`files_out.REQUEST`), the exit report names the job's tmpfs ("collect_from"), and the
supervisor keeps it until the service has taken them and closed `control`.

The exit report goes as soon as the job's program has ended and every other process of
the job has been sent SIGKILL (`_reports_early`), not once the jail's pid 1 and its
namespaces are gone: their teardown is off the job's path. The jail's mount namespace is
held open until the report is sent, so that its teardown (an RCU grace period) is not
paid by the last process to leave it either.

A job without network under nsjail has a compiled supervisor instead, spawned
(`nsjail.spawn_supervisor`): the same protocol, at a fraction of a fork's cost.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gristmill.isolation import files_out, netns, nsjail
from gristmill.isolation.cgroups import keyed
from gristmill.isolation.jail import (
    JOB_FDS,
    OOM_FIRST,
    JailSpec,
    build_root,
    enter_namespaces,
    enter_root,
    exec_program,
    rusage_ns,
    write_file,
)
from gristmill.isolation.linux import PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE, prctl
from gristmill.isolation.template import TemplateGone, Templates, template_fork
from gristmill.isolation.thrash import SocketWatch, ThrashWatch

FD_NAMES = (*JOB_FDS, "control", "report")
"""The descriptors that come with each spawn message, in this order."""
MAX_MESSAGE = 1 << 20
CONTROL_READ = 4096
"""What one read of `control` takes: every command the service can have written by then."""
CPU_POLL_S = 0.02
PIDS_GRACE_NS = 500_000_000
"""A job whose forks are still refused this long after the first refusal is stopped."""
PIDS_EPISODE_NS = 3_000_000_000
"""Refusals further apart than this are separate episodes, each with its own grace."""


def _send(fd: int, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(message).encode() + b"\n")


def _init(spec: JailSpec, fds: dict[str, int], status: int, start: Start) -> None:
    """Pid 1 of the job: starts the program, reaps, reports its end, exits (killing the rest)."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        enter_root(spec)
        # The job runs as our uid: undumpable, our /proc/1/{fd,mem} are closed to it.
        prctl(PR_SET_DUMPABLE, 0)
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        program = os.fork()
        if program == 0:
            os.close(error_r)
            start(spec, fds, error_w)
        os.close(error_w)
        for name in JOB_FDS:
            os.close(fds[name])
        failure = os.read(error_r, 4096)
        if failure:
            _send(status, {"error": failure.decode(errors="replace")})
        else:
            _send(status, {"running": time.monotonic_ns()})
        while True:
            try:
                pid, wait_status, usage = os.wait4(-1, 0)
            except ChildProcessError:
                break
            if pid == program:
                _send(status, {"wait_status": wait_status, **rusage_ns(usage)})
                break
    except BaseException as error:
        _send(status, {"error": f"sandbox init: {error}"})
    finally:
        os._exit(0)


Start = Callable[[JailSpec, dict[str, int], int], None]
"""How init starts the job's program (`exec_program`, or `template.become_program`): given
the spec, the job's descriptors and a pipe for why it could not, it never returns."""


class _Jail(Protocol):
    """How the supervisor sees a jail being built and run, whichever builds it."""

    pid: int
    # The jail's pid 1, as a descriptor: signalled and waited for by it, never by its pid,
    # which a pid 1 that is not the supervisor's child could have freed for another.
    pidfd: int
    # The job's tmpfs, open (-1 if it could not be): kept past the jail's end, and the
    # service writes a warm sandbox's files through it.
    job_dir_fd: int

    def watched(self) -> list[int]: ...

    def read(self, fd: int) -> tuple[bool, list[dict[str, Any]]]: ...

    def finish(self) -> list[dict[str, Any]]: ...


def _build(
    spec: JailSpec, fds: dict[str, int], status: int, answer: int, start: Start = exec_program
) -> None:
    """The builder: sets the OOM floor, joins the job's cgroup, builds the jail, starts init.

    It sends "pid N" (init's pid) with descriptors of init and of itself (pidfds) and of the
    job's directory (which keeps it alive for `files_out` past the jail's end), or why it
    failed, on the socket `answer`, then exits, leaving init to the supervisor (a
    subreaper; a template's child's to the template, `template.py`). The supervisor
    itself so stays outside the job's namespaces and memory cgroup: a job that fills
    its memory cannot get it OOM-killed.
    """
    answer_socket = socket.socket(fileno=answer)
    try:
        # The OOM killer must pick the job, never init: a job whose memory is in tmpfs
        # pages has little RSS of its own. Inherited by init and the program; the job's
        # /proc is read-only, so it cannot lower it (and with CAP_SYS_RESOURCE, writing
        # it here also sets the kernel's floor).
        write_file("/proc/self/oom_score_adj", str(OOM_FIRST))
        enter_namespaces(spec)
        build_root(spec)
        pid = os.fork()
        if pid == 0:
            os.close(answer)
            _init(spec, fds, status, start)
        passed = [os.pidfd_open(pid), os.pidfd_open(os.getpid())]
        job_dir = files_out.open_job_dir(spec.root_dir + spec.jail_job_dir)
        if job_dir >= 0:
            passed.append(job_dir)
        socket.send_fds(answer_socket, [f"pid {pid}".encode()], passed)
    except BaseException as error:
        os.write(answer, str(error).encode(errors="replace") or repr(error).encode())
    finally:
        os._exit(0)


class _OwnJail:
    """The process backend's jail: its init reports on a pipe, one JSON object a line.

    Its builder is forked here, or, given the socket of a template (`template`), it is
    that template's child, whose program is not exec'd (`template.py`).
    """

    def __init__(self, spec: JailSpec, fds: dict[str, int], template: int = -1) -> None:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        status_r, status_w = os.pipe()
        try:
            if template >= 0:
                answer_r, builder = template_fork(template, spec, fds, status_w), -1
            else:
                answer_r, builder = self._fork_builder(spec, fds, status_w)
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        try:
            answer, received, _, _ = socket.recv_fds(answer_r, 4096, 3)
        except ConnectionResetError as error:
            # The template's child never took the job (the template died with the request
            # unread): nothing of it was started.
            os.close(status_r)
            raise TemplateGone(str(error)) from error
        finally:
            answer_r.close()
        if builder > 0:
            os.waitpid(builder, 0)
        self._child = builder > 0
        if not answer.startswith(b"pid "):
            os.close(status_r)
            raise RuntimeError(answer.decode(errors="replace") or "the jail builder died")
        self.pidfd, builder_fd, *job_dir = received
        # A template's child is not ours to wait for: its descriptor says when it is gone.
        _wait_gone(builder_fd)
        os.close(builder_fd)
        # The job's directory, open: its files can be taken out after the jail is gone.
        self.job_dir_fd = job_dir[0] if job_dir else -1
        # Only now that the builder is gone: counted with it, init's fork of the program
        # could meet the pids limit.
        for name in spec.supervisor_cgroup_files:
            write_file(name, "0")
        self.pid = int(answer[4:])
        self._status = status_r
        self._buffer = b""

    @staticmethod
    def _fork_builder(
        spec: JailSpec, fds: dict[str, int], status_w: int
    ) -> tuple[socket.socket, int]:
        """Forks the builder (`_build`); our end of the socket it answers on, and its pid."""
        answer_r, answer_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        builder = os.fork()
        if builder == 0:
            answer_r.close()
            os.close(fds["control"])
            os.close(fds["report"])
            _build(spec, {name: fds[name] for name in JOB_FDS}, status_w, answer_w.detach())
        answer_w.close()
        return answer_r, builder

    def watched(self) -> list[int]:
        return [self._status]

    def _lines(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def read(self, fd: int) -> tuple[bool, list[dict[str, Any]]]:
        chunk = os.read(fd, 65536)
        return bool(chunk), self._lines(chunk)

    def finish(self) -> list[dict[str, Any]]:
        if self._child:
            os.waitpid(self.pid, 0)
        else:
            _wait_gone(self.pidfd)
        os.close(self.pidfd)
        messages = []
        with contextlib.suppress(OSError):
            while chunk := os.read(self._status, 65536):
                messages += self._lines(chunk)
        return messages + self._lines(b"\n")


def _wait_gone(pidfd: int) -> None:
    """Blocks until the process of `pidfd` has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while not poller.poll():
        pass


def _build_jail(spec: JailSpec, fds: dict[str, int], template: int) -> _Jail:
    """Builds the jail the spec asks for: nsjail when it carries an nsjail argv, else ours,
    its program forked from the `template` (a socket; -1: exec'd), or exec'd when that
    template is gone."""
    if spec.nsjail_argv:
        return nsjail.launch(spec, fds)
    if template >= 0:
        with contextlib.suppress(TemplateGone):
            return _OwnJail(spec, fds, template)
    return _OwnJail(spec, fds)


class _Supervision:
    """The supervisor's view of one running job, its deadlines and its end."""

    def __init__(
        self, spec: JailSpec, report: int, started_ns: int, jail_pid: int, job_dir: str
    ) -> None:
        self.spec = spec
        self.report = report
        self.started_ns = started_ns
        # The jail's init (nsjail, or ours), the root of the job's processes: the pid the
        # job is known by, gone before the supervisor reports the job's end.
        self.jail_pid = jail_pid
        # The job's tmpfs as the service opens it, to write a warm sandbox's files.
        self.job_dir = job_dir
        self.running_ns = 0
        # The job's own limits: the spec's, or those its hand-over brings (warm).
        self.wall_time_ms = spec.wall_time_ms
        self.cpu_time_ms = spec.cpu_time_ms
        self.network_bytes = spec.network_bytes
        # Network bytes before the job (a warm sandbox's wait) are not the job's.
        self.network_baseline = (0, 0)
        self.handed = not spec.warm
        self.handover_ns = 0
        # CPU the group used before its job (a warm sandbox's wait) is not the job's.
        self.cpu_baseline_ns = 0
        self.stopped_for: str | None = None
        self.error = ""
        self.end: dict[str, int] = {}
        self._cpu_usage = os.open(spec.cpu_usage_file, os.O_RDONLY) if spec.cpu_usage_file else -1
        self._pids_events = (
            os.open(spec.pids_events_file, os.O_RDONLY) if spec.pids_events_file else -1
        )
        self._refused = 0
        self._episode = (0, 0)  # first and last refusal seen, monotonic ns
        self.memory = ThrashWatch(*spec.memory_files) if spec.memory_files else None
        self.sockets: SocketWatch | None = None
        if spec.network and spec.memory_files:
            _, limit_file, stat_file = spec.memory_files
            self.sockets = SocketWatch(limit_file, stat_file, spec.socket_memory_file)

    def stuck_at_process_limit(self, now: int) -> bool:
        """Whether forks have kept failing at the pids limit for longer than the grace."""
        if self._pids_events < 0:
            return False
        try:
            refused = keyed(os.pread(self._pids_events, 4096, 0).decode(), "max")
        except (OSError, ValueError):
            return False
        if refused < 0 or refused == self._refused:
            return False
        self._refused = refused
        first, last = self._episode
        if not first or now - last > PIDS_EPISODE_NS:
            first = now
        self._episode = (first, now)
        return now - first >= PIDS_GRACE_NS

    def on_status(self, message: dict[str, Any]) -> None:
        if "running" in message:
            self.running_ns = message["running"]
            _send(
                self.report,
                {
                    "type": "started",
                    "pid": self.jail_pid,
                    "setup_ns": self.running_ns - self.started_ns,
                    "job_dir": self.job_dir,
                },
            )
        elif "error" in message:
            self.error = message["error"]
        else:
            self.end = message

    def hand_over(self, command: str, network: netns.OwnNetwork | None = None) -> None:
        """A warm sandbox's job (its files already written by the service): its limits
        and clocks started, `handed` reported."""
        began = time.monotonic_ns()
        _, wall_ms, cpu_ms, network_bytes = command.split()
        self.wall_time_ms, self.cpu_time_ms = int(wall_ms), int(cpu_ms)
        self.network_bytes = int(network_bytes)
        if network is not None:
            self.network_baseline = network.counters()
        self.cpu_baseline_ns = self.cpu_used_ns()
        self.running_ns = time.monotonic_ns()
        self.handover_ns = self.running_ns - began
        self.handed = True
        _send(self.report, {"type": "handed"})

    @property
    def setup_ns(self) -> int:
        """The set-up this job waited for: a warm sandbox's hand-over, else all of it."""
        if self.spec.warm:
            return self.handover_ns
        return (self.running_ns or time.monotonic_ns()) - self.started_ns

    def network_used(self, network: netns.OwnNetwork) -> tuple[int, int]:
        """Bytes sent and received since the job was given its sandbox."""
        sent, received = network.counters()
        return sent - self.network_baseline[0], received - self.network_baseline[1]

    def limits_apply(self) -> bool:
        return bool(self.running_ns and self.handed)

    def deadline_ns(self) -> int | None:
        if not self.limits_apply() or not self.wall_time_ms:
            return None
        return self.running_ns + self.wall_time_ms * 1_000_000

    def cpu_used_ns(self) -> int:
        try:
            text = os.pread(self._cpu_usage, 4096, 0).decode()
        except OSError:
            return 0
        if self.spec.cpu_usage_v2:
            return max(keyed(text, "usage_usec"), 0) * 1000
        return int(text)


def _held_mounts(pid: int) -> int:
    """The mount namespace of the jail's pid 1, open (-1 if it cannot be had)."""
    try:
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _files_requested(spec: JailSpec) -> bool:
    return (Path(spec.job_dir).parent / files_out.REQUEST).exists()


def _reports_early(spec: JailSpec, job: _Supervision) -> bool:
    """Whether the exit report may go at the program's end, before the jail is gone: its
    init has said how the program ended, the job's usage is in its cgroup, it was not
    stopped, and no files are to be taken from it (its orphans must not be writing them)."""
    return (
        "wait_status" in job.end
        and bool(spec.cpu_usage_file)
        and job.stopped_for is None
        and not _files_requested(spec)
    )


def _kill_the_rest(spec: JailSpec, jail_pidfd: int) -> None:
    """SIGKILL to every process of the job but this one: the jail's pid 1 (whose end ends
    its pid namespace, a child forked meanwhile included), then each in the job's cgroup
    (by its threads: a kill reaches a thread's whole process)."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(jail_pidfd, signal.SIGKILL)
    try:
        listed = Path(spec.cgroup_join_files[0]).read_text().split()
    except (IndexError, OSError):
        return
    for pid in map(int, listed):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _supervise(spec: JailSpec, fds: dict[str, int], template: int = -1) -> None:
    report, control = fds["report"], fds["control"]
    started_ns = time.monotonic_ns()
    network: netns.OwnNetwork | None = None
    try:
        if spec.network:
            # Never the host's network: one of its own, which the jail then inherits.
            network = netns.enter(
                spec.egress_ruleset, spec.helper_cgroup_files, spec.network_connections
            )
        jail = _build_jail(spec, fds, template)
    except BaseException as error:
        _send(
            report, {"type": "exit", "pid": os.getpid(), "setup_error": f"sandbox setup: {error}"}
        )
        os._exit(0)
    for name in JOB_FDS:
        os.close(fds[name])
    job_dir = f"/proc/{os.getpid()}/fd/{jail.job_dir_fd}" if jail.job_dir_fd >= 0 else ""
    job = _Supervision(spec, report, started_ns, jail.pid, job_dir if spec.warm else "")
    pidfd = jail.pidfd
    # (Under nsjail the program is in namespaces of its own, not those of pid 1.)
    mounts = -1 if spec.nsjail_argv else _held_mounts(jail.pid)
    poller = select.poll()
    for fd in (pidfd, control, *jail.watched()):
        poller.register(fd, select.POLLIN)
    jail_done = early = False
    control_open = True

    def stop(reason: str) -> None:
        if job.stopped_for is None:
            job.stopped_for = reason
        with contextlib.suppress(ProcessLookupError):
            # The jail's pid 1: the kernel kills the rest of its pid namespace with it.
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)

    while not jail_done and not early:
        timeout_ms: float | None = None
        deadline = job.deadline_ns()
        if deadline is not None:
            timeout_ms = max(0.0, (deadline - time.monotonic_ns()) / 1e6)
        polled = job.cpu_time_ms or spec.pids_events_file or spec.memory_files or job.network_bytes
        if polled and job.limits_apply():
            timeout_ms = min(timeout_ms or CPU_POLL_S * 1000, CPU_POLL_S * 1000)
        for fd, _ in poller.poll(timeout_ms):
            if fd == control:
                # One command a line; two written quickly may come in one read.
                commands = os.read(control, CONTROL_READ).decode(errors="replace").splitlines()
                if not commands:
                    poller.unregister(control)
                    control_open = False
                    stop("cancel")
                for command in filter(None, map(str.strip, commands)):
                    if command.startswith("go ") and not job.handed:
                        try:
                            job.hand_over(command, network)
                        except (OSError, ValueError) as error:
                            job.error = f"sandbox hand-over: {error}"
                            stop("cancel")
                    else:
                        stop(command)
            elif fd == pidfd:
                jail_done = True
            else:
                still_open, messages = jail.read(fd)
                if not still_open:
                    poller.unregister(fd)
                for message in messages:
                    job.on_status(message)
                early = _reports_early(spec, job)
        now = time.monotonic_ns()
        if deadline is not None and now >= deadline:
            stop("wall_time")
        cpu_limit = job.cpu_time_ms
        if (
            cpu_limit
            and job.limits_apply()
            and job.cpu_used_ns() - job.cpu_baseline_ns >= cpu_limit * 1e6
        ):
            stop("cpu_time")
        if job.limits_apply() and job.stuck_at_process_limit(now):
            stop("processes")
        if job.memory and job.limits_apply() and job.memory.stuck(now):
            stop("memory")
        if job.sockets and job.limits_apply() and job.sockets.full():
            stop("socket_memory")
        if network and job.network_bytes and job.limits_apply():
            sent, received = job.network_used(network)
            if sent + received > job.network_bytes:
                stop("network")
    ended_ns = time.monotonic_ns()
    # Read before the rest of the job is killed: its network helper is in its group, and
    # `tap0` (with its counters) goes with the helper.
    sent, received = job.network_used(network) if network is not None else (0, 0)
    if early:
        # The program is gone: what is left of its jail goes too, off the job's path.
        _kill_the_rest(spec, pidfd)
    else:
        for message in jail.finish():
            job.on_status(message)
    # (An early report has found no request already.)
    collect = not early and jail.job_dir_fd >= 0 and _files_requested(spec)
    if jail.job_dir_fd >= 0 and not collect and not early:
        # The tmpfs's last reference: freed now, before the report says the job is gone.
        os.close(jail.job_dir_fd)
    _send(
        report,
        {
            "type": "exit",
            "pid": os.getpid(),
            "setup_error": job.error,
            "stopped_for": job.stopped_for,
            "wait_status": job.end.get("wait_status"),
            "run_ns": ended_ns - job.running_ns if job.limits_apply() else 0,
            "setup_ns": job.setup_ns,
            "network_sent_bytes": sent,
            "network_received_bytes": received,
            **{k: v for k, v in job.end.items() if k != "wait_status"},
            **({"collect_from": job_dir} if collect else {}),
        },
    )
    if mounts >= 0:
        os.close(mounts)
    if early:
        # Gone once we exit, as the service expects of our pid: the jail first.
        jail.finish()
    # The service takes the files through our descriptor, then closes `control`.
    while collect and control_open:
        try:
            if not os.read(control, 64):
                break
        except InterruptedError:
            continue
    os._exit(0)


def serve(sock: socket.socket) -> None:
    """Forks a supervisor per message until the service closes its end of the socket."""
    # Supervisors are reaped by the kernel; each resets this for its own children.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    templates = Templates()
    while True:
        try:
            data, fd_list, _, _ = socket.recv_fds(sock, MAX_MESSAGE, len(FD_NAMES))
        except InterruptedError:
            continue
        if not data:
            return
        fds = dict(zip(FD_NAMES, fd_list, strict=True))
        for fd in fd_list:
            # Received inheritable: what a supervisor passes on, it passes explicitly.
            os.set_inheritable(fd, False)
        try:
            spec = JailSpec.from_json(data)
            template = templates.socket_for(spec) if spec.fork_template else -1
            if spec.nsjail_supervisor and not spec.network:
                nsjail.spawn_supervisor(spec, fds)
                pid = -1
            else:
                pid = os.fork()
        except (ValueError, TypeError, OSError) as error:
            _send(fds["report"], {"type": "exit", "setup_error": f"fork server: {error}"})
            pid = -1
        if pid == 0:
            sock.close()
            templates.close_all_but(template)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _supervise(spec, fds, template)
            finally:
                os._exit(1)
        for fd in fd_list:
            os.close(fd)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.set_inheritable(False)  # passed to us inheritable; never to a supervisor
    serve(sock)


if __name__ == "__main__":
    main()
