"""The system-call filter every job's program runs under: one rule list, two renderings.

The policy is data (`seccomp.deny` in the sandbox profiles); `rules` adds the
rules that need arguments inspected (namespace flags of clone, socket families)
and turns the whole into a list of `Rule`s. The process backend has libseccomp
compile that list to a BPF program once, in the service (`compile_bpf`), and the
job's process installs the program as it is (`linux.set_seccomp_filter`): neither
libseccomp nor this module is loaded in the fork server, whose every import is
copied into each job's processes. The nsjail backend hands nsjail the same list as
a Kafel policy (`render_kafel`). Both name system calls by the number libseccomp
resolves for this machine, so the two filters cannot drift apart.

Refusals answer EPERM (EAFNOSUPPORT for socket families) so that programs see an
ordinary error they can report, rather than dying of SIGSYS; the profile's `nosys`
calls answer ENOSYS, so that programs take their fallback for a kernel without them.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby

import pyseccomp as seccomp

from gristmill.isolation.linux import NAMESPACE_FLAGS

__all__ = ["ArgTest", "Rule", "compile_bpf", "render_kafel", "rules"]

SOCK_TYPE_MASK = 0xF
SOCK_RAW = 3
SOCK_PACKET = 10
# Families a job granted the network may still not open (vsock reaches the hypervisor).
_NEVER = (socket.AF_NETLINK, socket.AF_PACKET, socket.AF_VSOCK)


@dataclass(frozen=True)
class ArgTest:
    """One comparison of a system call argument: `(arg & mask) == value`, or `arg op value`."""

    index: int
    op: str  # "eq", "ne" or "masked_eq"
    value: int
    mask: int = 0


@dataclass(frozen=True)
class Rule:
    """Answer `errno` to `syscall` (a number on this machine), when `arg` holds if given."""

    errno: int
    syscall: int
    name: str
    arg: ArgTest | None = None


def _number(name: str) -> int:
    """The call's number here, or -1 when neither libseccomp nor this kernel knows it."""
    return int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name))


def rules(deny: Sequence[str], *, network: bool, nosys: Sequence[str] = ()) -> list[Rule]:
    """The whole policy for a job: the profile's deny and nosys lists plus the argument rules."""

    def rule(code: int, name: str, arg: ArgTest | None = None) -> list[Rule]:
        number = _number(name)
        # A system call this machine does not know cannot be made either.
        return [Rule(code, number, name, arg)] if number >= 0 else []

    found: list[Rule] = []
    for name in deny:
        found += rule(errno.EPERM, name)
    for name in nosys:
        found += rule(errno.ENOSYS, name)
    for flag in NAMESPACE_FLAGS:
        found += rule(errno.EPERM, "clone", ArgTest(0, "masked_eq", flag, flag))
    # clone3 passes its flags in memory a filter cannot read: make libc fall back to clone.
    found += rule(errno.ENOSYS, "clone3")
    if network:
        for family in _NEVER:
            found += rule(errno.EAFNOSUPPORT, "socket", ArgTest(0, "eq", family))
        for kind in (SOCK_RAW, SOCK_PACKET):
            found += rule(errno.EPERM, "socket", ArgTest(1, "masked_eq", kind, SOCK_TYPE_MASK))
    else:
        found += rule(errno.EAFNOSUPPORT, "socket", ArgTest(0, "ne", socket.AF_UNIX))
    return found


def _libseccomp_arg(test: ArgTest) -> seccomp.Arg:
    if test.op == "masked_eq":
        return seccomp.Arg(test.index, seccomp.MASKED_EQ, test.mask, test.value)
    op = seccomp.EQ if test.op == "eq" else seccomp.NE
    return seccomp.Arg(test.index, op, test.value)


@lru_cache(maxsize=16)
def compile_bpf(deny: tuple[str, ...], *, network: bool, nosys: tuple[str, ...] = ()) -> bytes:
    """The policy as the BPF program libseccomp would load (its `seccomp_export_bpf`).

    Computed once per policy rather than in every job's process, where building
    the filter cost ~0.5 ms and importing libseccomp's binding made every fork slower.
    """
    compiled = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    # A call of another ABI (x32's numbers, i386's int 0x80) kills the whole process:
    # libseccomp's default kills only the calling thread, and a job's other threads
    # (Bun's, the JVM's, Mono's) would then run on to the wall time.
    compiled.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    for r in rules(deny, network=network, nosys=nosys):
        if r.arg is None:
            compiled.add_rule(seccomp.ERRNO(r.errno), r.syscall)
        else:
            compiled.add_rule(seccomp.ERRNO(r.errno), r.syscall, _libseccomp_arg(r.arg))
    # libseccomp writes to a descriptor: an anonymous memory file, of any size.
    with os.fdopen(os.memfd_create("gristmill-seccomp"), "w+b") as program:
        compiled.export_bpf(program)
        program.seek(0)
        return program.read()


def _kafel_test(test: ArgTest) -> str:
    arg = f"a{test.index}"
    if test.op == "masked_eq":
        return f"({arg} & {test.mask:#x}) == {test.value:#x}"
    return f"{arg} {'==' if test.op == 'eq' else '!='} {test.value:#x}"


def render_kafel(policy: Sequence[Rule]) -> str:
    """The same rules as a Kafel policy for nsjail's `--seccomp_string`.

    Calls are written as `SYSCALL[n]`, never by name, because Kafel's own table of
    names lags the kernel's; the tests of one call are joined with `||`.
    """
    blocks = []
    for code, same_errno in groupby(sorted(policy, key=lambda r: r.errno), key=lambda r: r.errno):
        entries = []
        ordered = sorted(same_errno, key=lambda r: r.syscall)
        for number, same_call in groupby(ordered, key=lambda r: r.syscall):
            tests = [r.arg for r in same_call]
            if any(test is None for test in tests):
                entries.append(f"SYSCALL[{number}]")
                continue
            arity = max(test.index for test in tests if test is not None) + 1
            names = ", ".join(f"a{i}" for i in range(arity))
            expression = " || ".join(f"({_kafel_test(t)})" for t in tests if t is not None)
            entries.append(f"SYSCALL[{number}]({names}) {{ {expression} }}")
        blocks.append(f"ERRNO({code}) {{ {', '.join(entries)} }}")
    return " ".join([*blocks, "DEFAULT ALLOW"])
