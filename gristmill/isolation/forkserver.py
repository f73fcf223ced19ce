"""The fork server: a single-threaded process that is the parent of every jail.

The gRPC server is threaded, and a threaded process must not do anything but
exec between fork and exec. So the service starts this module once as its own
process and sends it one message per job over a Unix socket: the `JailSpec` as
JSON plus the job's pipes as passed descriptors, and goes back to listening.

Every job is supervised by the compiled supervisor (`supervisor.py`,
`nsjail_supervisor.c`): its limits, clocks and report on the `report` pipe, its stop
on the `control` pipe. A job under nsjail without network has it spawned from here.
For any other job a child is forked, which does what needs Python, then execs the
supervisor in its place: a network-on job's namespace (`netns.py`), and the process
backend's jail (`_OwnJail`: the builder, `builder.py`, forked or a template's child).
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
from typing import Any

from gristmill.isolation import builder, netns, nsjail, supervisor
from gristmill.isolation.jail import (
    JOB_FDS,
    JailSpec,
    write_file,
)
from gristmill.isolation.linux import PR_SET_CHILD_SUBREAPER, prctl
from gristmill.isolation.template import TemplateGone, Templates, template_fork

FD_NAMES = (*JOB_FDS, "control", "report")
"""The descriptors that come with each spawn message, in this order."""
MAX_MESSAGE = 1 << 20


def _send(fd: int, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(message).encode() + b"\n")


class _OwnJail:
    """The process backend's jail, built: its init (`pid`, `pidfd`; our `child` unless a
    template's), init's `status` pipe and the job's tmpfs (`job_dir_fd`, -1 if none).

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
        self.child = builder > 0
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
        self.status = status_r

    @staticmethod
    def _fork_builder(
        spec: JailSpec, fds: dict[str, int], status_w: int
    ) -> tuple[socket.socket, int]:
        """Forks the builder (`builder.build`); our end of the socket it answers on, and its
        pid."""
        answer_r, answer_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            answer_r.close()
            os.close(fds["control"])
            os.close(fds["report"])
            builder.build(spec, {name: fds[name] for name in JOB_FDS}, status_w, answer_w.detach())
        answer_w.close()
        return answer_r, pid


def _wait_gone(pidfd: int) -> None:
    """Blocks until the process of `pidfd` has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while not poller.poll():
        pass


def _own_jail(spec: JailSpec, fds: dict[str, int], template: int) -> _OwnJail:
    """The process backend's jail, its program forked from the `template` (a socket; -1:
    exec'd), or exec'd when that template is gone."""
    if template >= 0:
        with contextlib.suppress(TemplateGone):
            return _OwnJail(spec, fds, template)
    return _OwnJail(spec, fds)


def _prepare(spec: JailSpec, fds: dict[str, int], template: int) -> None:
    """In the fork server's child: what needs Python (a network-on job's namespace, the
    process backend's jail), then the compiled supervisor exec'd in its place."""
    started_ns = time.monotonic_ns()
    placed = {5: fds["control"], 6: fds["report"]}
    try:
        if spec.network:
            # Never the host's network: one of its own, which the jail then inherits. Its
            # helper ends when the supervisor does (its exit descriptor closes).
            network = netns.enter(
                spec.egress_ruleset, spec.helper_cgroup_files, spec.network_connections
            )
            placed[supervisor.NETWORK_EXIT_FD] = network.exit_fd
        if spec.nsjail_argv:
            placed.update(enumerate(fds[name] for name in JOB_FDS))
            args = supervisor.argv(spec, nsjail.init_argv(spec))
        else:
            jail = _own_jail(spec, fds, template)
            placed[supervisor.JAIL_PIDFD] = jail.pidfd
            placed[supervisor.JAIL_STATUS_FD] = jail.status
            placed[supervisor.JOB_DIR_FD] = jail.job_dir_fd
            has_dir = jail.job_dir_fd >= 0
            args = supervisor.own_argv(spec, jail.pid, jail.child, has_dir, started_ns)
        supervisor.exec_supervisor(args, placed)
    except BaseException as error:
        _send(
            fds["report"],
            {"type": "exit", "pid": os.getpid(), "setup_error": f"sandbox setup: {error}"},
        )


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
            if spec.nsjail_argv and not spec.network:
                supervisor.spawn(spec, fds, nsjail.init_argv(spec))
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
                _prepare(spec, fds, template)
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
