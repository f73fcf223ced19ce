"""The builder of the process backend's own jail, forked per job by the fork server or a
template's child (`template.py`): it joins the job's cgroup, builds the jail and starts the
job's init, which says on a status pipe, a line at a time, when the program runs and how it
ended. A module of its own so that the fork server and the template both use it, neither
importing the other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable

from gristmill.isolation import files_out
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
from gristmill.isolation.linux import PR_SET_DUMPABLE, prctl

__all__ = ["Start", "build", "status_line"]


def status_line(fd: int, line: str) -> None:
    """One of init's status lines to the supervisor (`on_status` in `nsjail_supervisor.c`)."""
    with contextlib.suppress(OSError):
        os.write(fd, line.replace("\n", " ").encode(errors="replace") + b"\n")


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
            status_line(status, "error " + failure.decode(errors="replace"))
        else:
            status_line(status, f"running {time.monotonic_ns()}")
        while True:
            try:
                pid, wait_status, usage = os.wait4(-1, 0)
            except ChildProcessError:
                break
            if pid == program:
                spent = rusage_ns(usage)
                status_line(
                    status,
                    f"end {wait_status} {spent['user_cpu_ns']} {spent['system_cpu_ns']} "
                    f"{spent['peak_memory_bytes']}",
                )
                break
    except BaseException as error:
        status_line(status, f"error sandbox init: {error}")
    finally:
        os._exit(0)


Start = Callable[[JailSpec, dict[str, int], int], None]
"""How init starts the job's program (`exec_program`, or `template.become_program`): given
the spec, the job's descriptors and a pipe for why it could not, it never returns."""


def build(
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
