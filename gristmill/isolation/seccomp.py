"""The system-call filter every job's program runs under, built with libseccomp.

The policy is data (`seccomp.deny` in the sandbox profiles); this module adds the
rules that need arguments inspected: namespace flags of clone, and socket
families. Refusals answer EPERM (EAFNOSUPPORT for sockets) so that programs see
an ordinary error they can report, rather than dying of SIGSYS.
"""

from __future__ import annotations

import errno
import socket

import pyseccomp as seccomp

from gristmill.isolation.linux import NAMESPACE_FLAGS

SOCK_TYPE_MASK = 0xF
SOCK_RAW = 3
SOCK_PACKET = 10
# Families a job granted the network may still not open.
_NEVER = (socket.AF_NETLINK, socket.AF_PACKET)


def build_filter(deny: list[str], *, network: bool) -> seccomp.SyscallFilter:
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in deny:
        try:
            rules.add_rule(eperm, name)
        except (RuntimeError, ValueError):
            # A system call this libseccomp does not know cannot be made either.
            continue
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory a filter cannot read: make libc fall back to clone.
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    no_family = seccomp.ERRNO(errno.EAFNOSUPPORT)
    if network:
        for family in _NEVER:
            rules.add_rule(no_family, "socket", seccomp.Arg(0, seccomp.EQ, family))
        for kind in (SOCK_RAW, SOCK_PACKET):
            rules.add_rule(eperm, "socket", seccomp.Arg(1, seccomp.MASKED_EQ, SOCK_TYPE_MASK, kind))
    else:
        rules.add_rule(no_family, "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    return rules


def load_filter(deny: list[str], *, network: bool) -> None:
    """Installs the filter on the calling process; it holds across exec, for all children."""
    build_filter(deny, network=network).load()
