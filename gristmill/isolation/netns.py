"""A network-on sandbox's own network namespace: slirp4netns for the way out, nftables
for the egress policy.

It runs in the fork server's supervisor (root, single-threaded), before the jail is
built: the supervisor moves itself into a new network namespace, owned by the host's
user namespace, so that whichever backend builds the jail, the job starts there and
has no capability over it. `slirp4netns`, started in the host's namespace, gives it a
`tap0` interface and carries its connections out through ordinary host sockets (never
to the host's loopback: `--disable-host-loopback`), in a mount namespace of its own,
without capabilities and under its own seccomp filter. It is the job's in cost: in the
job's memory and CPU groups (its CPU is billed to the job, under the job's quota), its
descriptors (a host socket per flow) capped by the job's cap on flows. It exits when
the supervisor does (its exit descriptor closes). The policy (`egress.py`) is an
nftables ruleset loaded into the namespace before the job's first instruction. IPv6 is
off in the namespace (slirp4netns runs without its own), so that an IPv6 connect()
fails at once.

Why slirp4netns and not pasta: measured here (`bench/network.py`), slirp4netns is ready
in 5-22 ms, pasta (Debian's 2023-03 build) in 37-83 ms; pasta also drops to "nobody"
before it joins the namespace, so a namespace owned by the host's root is closed to it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import subprocess
from collections.abc import Sequence

from gristmill.isolation.jail import write_file
from gristmill.isolation.linux import CLONE_NEWNET, setns, unshare

__all__ = ["NFT", "SLIRP4NETNS", "OwnNetwork", "enter"]

SLIRP4NETNS = "/usr/bin/slirp4netns"
NFT = "/usr/sbin/nft"
TAP = "tap0"
READY_TIMEOUT_S = 10.0
HELPER_DESCRIPTORS = 64
"""What slirp4netns holds of its own (standard streams, tap, pipes, poll, DNS)."""
UNCAPPED_FLOWS = 1024
"""The flows slirp4netns may hold at once for a sandbox without a cap on them (a
resolve or install step): the jobs' default cap."""


class OwnNetwork:
    """The supervisor's handle on its namespace: traffic counters, and the way out."""

    def __init__(self, slirp: subprocess.Popen[bytes], exit_fd: int) -> None:
        self._slirp = slirp
        self.exit_fd = exit_fd
        # Opened now: the nsjail backend's supervisor later sees the job's /proc there.
        self._counters_fd = os.open("/proc/self/net/dev", os.O_RDONLY | os.O_CLOEXEC)

    def counters(self) -> tuple[int, int]:
        """Bytes the job sent and received through `tap0`, frames' headers included."""
        table = os.pread(self._counters_fd, 65536, 0).decode()
        for line in table.splitlines():
            name, _, numbers = line.partition(":")
            if name.strip() == TAP:
                fields = numbers.split()
                return int(fields[8]), int(fields[0])
        return 0, 0

    def close(self) -> None:
        os.close(self._counters_fd)
        os.close(self.exit_fd)
        try:
            self._slirp.wait(READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._slirp.kill()
            self._slirp.wait()


def _start_helper(host: int, cgroup_files: Sequence[str], descriptors: int) -> None:
    """In slirp4netns before its exec: the job's cgroup, a cap on its descriptors (one
    host socket a flow), then the host's network namespace for its own sockets."""
    for name in cgroup_files:
        write_file(name, "0")
    resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
    setns(host, CLONE_NEWNET)


def _without_ipv6() -> None:
    """IPv6 off on every interface of the (new) namespace, as on each it will have: the
    job's IPv6 connect()s fail at once (ENETUNREACH) rather than wait for neighbours
    that never answer on tap0 (slirp4netns runs without its IPv6)."""
    for interfaces in ("all", "default"):
        with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
            write_file(f"/proc/sys/net/ipv6/conf/{interfaces}/disable_ipv6", "1")


def enter(ruleset: str, helper_cgroup_files: Sequence[str], flows: int) -> OwnNetwork:
    """Moves the calling process into a new network namespace, connected and filtered.

    slirp4netns joins `helper_cgroup_files` (the job's group: its CPU and memory are
    the job's) and may hold `flows` descriptors for the job's connections and UDP
    destinations (the policy's cap; 0, none: `UNCAPPED_FLOWS`) beyond its own
    `HELPER_DESCRIPTORS`.
    """
    host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ready_r, ready_w = os.pipe()
    exit_r, exit_w = os.pipe()
    descriptors = HELPER_DESCRIPTORS + (flows or UNCAPPED_FLOWS)
    try:
        unshare(CLONE_NEWNET)
        _without_ipv6()
        slirp = subprocess.Popen(
            [
                *(SLIRP4NETNS, "--configure", "--disable-host-loopback"),
                *("--enable-sandbox", "--enable-seccomp"),
                *("--ready-fd", str(ready_w), "--exit-fd", str(exit_r)),
                *(str(os.getpid()), TAP),
            ],
            pass_fds=(ready_w, exit_r),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Our namespace is the one it connects; its own sockets live in the host's.
            # (The supervisor is single-threaded: preexec_fn is safe in it.)
            preexec_fn=lambda: _start_helper(host, helper_cgroup_files, descriptors),
        )
    finally:
        os.close(host)
        os.close(ready_w)
        os.close(exit_r)
    network = OwnNetwork(slirp, exit_w)
    try:
        # While slirp4netns makes its interface: the rules do not depend on it.
        loaded = subprocess.run(
            [NFT, "-f", "-"],
            input=ruleset.encode(),
            capture_output=True,
            timeout=READY_TIMEOUT_S,
            check=False,
        )
        if loaded.returncode:
            raise RuntimeError(f"nft: {loaded.stderr.decode(errors='replace').strip()}")
        readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT_S)
        if not readable or not os.read(ready_r, 1):
            raise RuntimeError("slirp4netns could not connect the network namespace")
    except BaseException:
        network.close()
        raise
    finally:
        os.close(ready_r)
    return network
