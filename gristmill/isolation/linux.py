"""Thin ctypes wrappers for the Linux calls Python 3.11's `os` lacks, and their constants."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import platform
import signal
import struct
from collections.abc import Iterator

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_CAPSET = 126
_CAPABILITY_VERSION_3 = 0x20080522
SECCOMP_MODE_FILTER = 2
SYS_PIVOT_ROOT = 155
SYS_RT_SIGACTION = 13
_BPF_INSTRUCTION_BYTES = 8


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


@contextlib.contextmanager
def file_system_ids(uid: int, gid: int) -> Iterator[None]:
    """Creates files as `uid`/`gid` in the block (the calling thread's fsuid and fsgid).

    A tmpfs mounted in a job's user namespace refuses (EOVERFLOW) a file whose owner it
    cannot map, such as host root's; the jail's own ids map. Single-threaded callers only.
    A change of fsuid makes the process undumpable, which would close its /proc/<pid>/fd
    to a service without CAP_SYS_PTRACE (in a container): whether it was is restored.
    """
    dumpable = _libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    old_gid = _libc.setfsgid(gid)
    old_uid = _libc.setfsuid(uid)
    try:
        yield
    finally:
        _libc.setfsuid(old_uid)
        _libc.setfsgid(old_gid)
        if dumpable > 0:
            prctl(PR_SET_DUMPABLE, dumpable)


def default_signals() -> None:
    """Every signal at its default and none blocked, for a program about to be exec'd:
    what this process ignores (Python: SIGPIPE, SIGXFSZ; glibc's posix_spawn: its internal
    signals, in whatever spawned the service) would otherwise stay ignored through exec.
    By the system call: libc refuses its internal signals."""
    by_default = (ctypes.c_ulong * 4)()  # SIG_DFL, no flags, no restorer, empty mask
    for number in range(1, 65):
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            _libc.syscall(SYS_RT_SIGACTION, number, by_default, None, ctypes.sizeof(ctypes.c_ulong))
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def drop_capabilities() -> None:
    """Gives up every capability for good: the bounding and ambient sets emptied, then the
    effective, permitted and inheritable ones. What an exec of an unprivileged user's
    program does to the last three, for a process that is not exec'd (a template's child,
    which holds all of them in the user namespace it has just built its jail in)."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == 0:
        cap += 1
    if ctypes.get_errno() != errno.EINVAL or cap == 0:  # EINVAL: past the last capability
        _check(-1, "prctl(PR_CAPBSET_DROP)")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT)")
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)  # 0: this process
    none = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; two words each
    _check(_libc.syscall(SYS_CAPSET, header, none), "capset")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: a classic BPF program, as seccomp takes it."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def set_seccomp_filter(program: bytes) -> None:
    """Installs a compiled seccomp BPF program on the calling thread; it holds across exec.

    The caller must have set no_new_privs (or hold CAP_SYS_ADMIN), as for libseccomp's load.
    """
    instructions = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _BPF_INSTRUCTION_BYTES, ctypes.addressof(instructions))
    _check(
        _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), 0, 0),
        "seccomp",
    )


AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000


@functools.cache
def foreign_abi_filter() -> bytes:
    """A BPF program that kills a process making a call of another ABI, and allows the rest.

    x32 calls are x86_64 calls with bit 30 set in their number, and i386 calls (`int
    0x80`) are of another architecture: a filter written for x86_64 numbers (nsjail's
    Kafel policy) would let x32 calls through where the kernel has the x32 ABI, and
    Kafel kills only the calling thread on another architecture, which leaves a
    runtime's other threads running. Empty on other machines.
    """
    if platform.machine() != "x86_64":
        return b""
    load_word, jump_eq, jump_ge, ret = 0x20, 0x15, 0x35, 0x06
    program = [
        (load_word, 0, 0, 4),  # A = seccomp_data.arch
        (jump_eq, 1, 0, AUDIT_ARCH_X86_64),  # x86_64: on to its number
        (ret, 0, 0, SECCOMP_RET_KILL_PROCESS),  # i386 (or any other)
        (load_word, 0, 0, 0),  # A = seccomp_data.nr
        (jump_ge, 0, 1, X32_SYSCALL_BIT),
        (ret, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (ret, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
