"""Forked interpreters (`pool.fork_interpreters`): a job's Python forked, not started.

A template is one `/usr/bin/python3` per command and locale, started by the fork server
with the wrapper's imports and this package's jail code loaded, and nothing of any job in
it: it is given no job's spec, descriptors or data, only requests (a socket each). For
each it forks a child, which takes its job's spec and descriptors from that socket and
becomes the job's builder (`builder.build`): it joins the job's cgroup, becomes the
jail's user, unshares every namespace, builds the root and forks the job's init, whose
child, the program, is given what an exec'd program is (`jail.prepare_program`: rlimits,
descriptors 0 to 4 only, no capabilities, no_new_privs, seccomp) and then runs the
wrapper's `main` in the interpreter it already is: no exec, no interpreter start.

The tree of a forked job:

    fork server ── supervisor (the job's limits, clocks and report, as for any job)
    └── template   a subreaper: the job's init is reparented to it (and reaped)
        └── builder (a child per job)
            └── init, pid 1 of the job
                └── program: the wrapper's main()

What a child keeps of the template is its memory, copied on write: the interpreter, its
modules and the address layout, the same in every job (see the README's "Forked
interpreters" for why that is accepted). A job's writes to them (sys.modules, a module's
state) are its own copy. The template's socket is closed in each child at once; the
template is as unreachable from a job as the fork server: another user on the host, no
process of it in the job's pid namespace, no descriptor of it in the job.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from gristmill.isolation import builder
from gristmill.isolation.jail import JOB_FDS, JailSpec, join_cgroup, prepare_program, write_file
from gristmill.isolation.linux import PR_SET_CHILD_SUBREAPER, default_signals, prctl

if TYPE_CHECKING:
    from gristmill.isolation.profile import BindMount

FLAG = "--template"
"""The wrapper's argument that makes it a template (`runtimes/python/wrapper.py`)."""
WRAPPER = "/gristmill/runtime/wrapper.py"
"""The program a template can become: the Python wrapper, where every jail mounts it."""
LOCALE = ("LANG", "LC_ALL", "LC_CTYPE")
"""What of a job's environment the interpreter reads as it starts: its templates differ by it."""
MAX_TEMPLATES = 4
"""Templates a fork server keeps (each ~10 MB); a job of another command or locale is exec'd."""
RESTART_S = 1.0
"""A template that died is started again at most this often; jobs in between are exec'd."""
MAX_SPEC = 1 << 20
MIN_MEMORY = 1 << 20
"""The least memory limit `_charge_template_memory` leaves a job (a group must have one)."""


class TemplateGone(Exception):
    """The template did not take the request: the job's program is exec'd instead."""


def template_command(argv: Sequence[str], mounts: Sequence[BindMount]) -> list[str]:
    """The command of a template that can become the program `argv`, [] if none can: the
    Python wrapper's command with the host's path of the wrapper the jail mounts."""
    if not argv or argv[-1] != WRAPPER or not Path(argv[0]).name.startswith("python"):
        return []
    runtime = next((m.source for m in mounts if m.target == str(Path(WRAPPER).parent)), None)
    if runtime is None:
        return []
    package_root = Path(__file__).resolve().parents[2]
    return [*argv[:-1], f"{runtime}/{Path(WRAPPER).name}", FLAG, str(package_root)]


# The fork server's side


class _Template:
    """One running template, and the socket its requests go to."""

    def __init__(self, command: list[str], env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [*command, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=dict(env),
                cwd="/",
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours
        self.pidfd = os.pidfd_open(self.process.pid)
        self.started = time.monotonic()

    def alive(self) -> bool:
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        self.socket.close()
        os.close(self.pidfd)


class Templates:
    """The fork server's templates: started at their first job, again when one has died."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, ...], _Template] = {}

    def socket_for(self, spec: JailSpec) -> int:
        """The socket of the template for `spec`'s job, -1 if it is to be exec'd."""
        env = {name: spec.env[name] for name in LOCALE if name in spec.env}
        key = (*spec.fork_template, *(f"{k}={v}" for k, v in env.items()))
        template = self._running.get(key)
        if template is not None and not template.alive():
            if time.monotonic() - template.started < RESTART_S:
                return -1
            template.close()
            del self._running[key]
            template = None
        if template is None:
            if len(self._running) >= MAX_TEMPLATES:
                return -1
            try:
                template = self._running[key] = _Template(spec.fork_template, env)
            except OSError:
                return -1
        return template.socket.fileno()

    def close_all_but(self, keep: int) -> None:
        """In a supervisor: the other templates' sockets are not its to hold."""
        for template in self._running.values():
            if template.socket.fileno() != keep:
                template.socket.close()
            os.close(template.pidfd)


def template_fork(template: int, spec: JailSpec, fds: dict[str, int], status: int) -> socket.socket:
    """In a supervisor: asks the template (its socket) for a child and gives the child its
    job, status pipe and descriptors; the socket the child answers on, as `builder.build` does.

    Raises TemplateGone if the template does not take the request. The template's socket
    is closed: nothing forked from the supervisor later needs it.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    requests = socket.socket(fileno=template)
    try:
        socket.send_fds(requests, [b"fork"], [theirs.fileno()])
    except OSError as error:
        ours.close()
        raise TemplateGone(str(error)) from error
    finally:
        requests.close()
        theirs.close()
    socket.send_fds(ours, [spec.to_json()], [status, *(fds[name] for name in JOB_FDS)])
    return ours


# The template's side


def serve(requests_fd: int, run: Callable[[], object]) -> NoReturn:
    """The template's loop: a child per request, until the fork server and every
    supervisor have closed their ends. `run` is the wrapper's `main`."""
    requests = socket.socket(fileno=requests_fd)
    # Builders are reaped by the kernel, and so is each job's init, reparented to us.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    # Never collected, never written by the collector: the children share these pages.
    gc.collect()
    gc.freeze()
    while True:
        try:
            data, passed, _, _ = socket.recv_fds(requests, 16, 1)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)
        if not passed:
            continue
        if os.fork() == 0:
            os.close(requests.detach())
            _child(passed[0], builder.build, run)
        os.close(passed[0])


def _child(channel: int, build: Callable[..., None], run: Callable[[], object]) -> NoReturn:
    """A template's child: takes its job from `channel` and builds its jail (`build`),
    whose program runs `run`. Its builder's answers go on `channel` too."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        with socket.socket(fileno=channel) as job_socket:
            data, received, _, _ = socket.recv_fds(job_socket, MAX_SPEC, 1 + len(JOB_FDS))
            job_socket.detach()
        status, *job_fds = received
        spec = JailSpec.from_json(data)
        if spec.network:
            # Its network namespace is the supervisor's, never ours (the host's).
            raise ValueError("a forked interpreter is never given the network")
        fds = dict(zip(JOB_FDS, job_fds, strict=True))
        # In the job's group before its memory is measured (and again by `build`).
        join_cgroup(spec)
        _charge_template_memory(spec)
        build(spec, fds, status, channel, functools.partial(become_program, run=run))
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.write(channel, f"template: {error}".encode(errors="replace"))
    finally:
        os._exit(1)


def _charge_template_memory(spec: JailSpec) -> None:
    """Lowers the job's memory limit by the template's anonymous memory this child holds.

    Those pages are shared with the template and charged to its group, not to the job's:
    without this a forked job could hold that much more than an exec'd one, whose
    interpreter is charged to it, and its own count of its memory (RssAnon) would be past
    what its group says. The service lowers a warm sandbox's job's limit by the same
    (`SupervisedSandbox.hand_over`).
    """
    if not spec.memory_files:
        return  # no cgroup: RLIMIT_AS counts the template's mappings as an exec'd one's
    limit_file = spec.memory_files[1]
    try:
        limit = int(Path(limit_file).read_text())
    except ValueError:
        return  # v2's "max": no limit to lower
    with Path("/proc/self/status").open() as status:
        shared = next(int(line.split()[1]) << 10 for line in status if line.startswith("RssAnon"))
    write_file(limit_file, str(max(limit - shared, MIN_MEMORY)))


def _interpreter_signals() -> None:
    """A fresh interpreter's signals (init set some to their defaults): SIGINT raises
    KeyboardInterrupt, SIGPIPE and SIGXFSZ are ignored, every other at its default, none
    blocked. All are reset first: the template inherited what its starter ignored (under
    make, glibc's posix_spawn leaves its internal signal 32 ignored), as an exec'd program
    would not."""
    default_signals()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _take_identity(spec: JailSpec) -> None:
    """What the interpreter would have been started with: the job's environment and
    command line (the template's were its own), and the time zone that environment says."""
    os.environ.clear()
    os.environ.update(spec.env)
    sys.argv = [spec.argv[-1]]
    sys.orig_argv = list(spec.argv)
    sys.modules["__main__"].__file__ = spec.argv[-1]
    time.tzset()


def become_program(
    spec: JailSpec, fds: dict[str, int], error_pipe: int, run: Callable[[], object]
) -> NoReturn:
    """The job's program, a template's child (init's `start`): given what an exec'd one
    would be, it runs `run` (the wrapper's main). Its error pipe closed says it runs."""
    try:
        error_pipe = prepare_program(spec, fds, error_pipe, forked=True)
        _interpreter_signals()
        _take_identity(spec)
    except BaseException as error:
        os.write(error_pipe, f"cannot start {spec.argv[0]}: {error}".encode())
        os._exit(127)
    os.close(error_pipe)
    try:
        run()
    finally:
        os._exit(1)
