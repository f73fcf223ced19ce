"""Test hosts: a program on a private address, in a network namespace of its own.

Jobs and resolve steps never reach the host's own addresses (their namespaces' egress
policy refuses them), so a server a test stands up for them to reach (a package feed, a
TCP peer) lives in a namespace the test makes (`unshare --net`, not a name under
/run/netns, which other tools on a shared machine may clean up under our feet) with a
veth pair to the host, as `ip netns add` would make it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["namespaced_host"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _wait_for_own_namespace(pid: int, timeout_s: float = 30.0) -> None:
    """`unshare` has made its namespace (under load it may not have run yet)."""
    own = Path("/proc/self/ns/net").stat().st_ino
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}/ns/net").stat().st_ino == own:
        if time.monotonic() > deadline:
            raise AssertionError("unshare --net did not make its namespace")
        time.sleep(0.01)


@contextlib.contextmanager
def namespaced_host(command: Sequence[str], port: int, tag: int = 0) -> Iterator[str]:
    """Runs `command` (which finds its address as `{address}` in its arguments) in a
    network namespace of its own and yields that address once `port` accepts there.
    `tag` tells apart several hosts of one test process."""
    octet = (os.getpid() + tag * 7) % 250 + 1
    host_side, its_side = f"10.213.{octet}.1", f"10.213.{octet}.2"
    veth = f"gmv{(os.getpid() + tag) % 100000}"
    argv = [arg.replace("{address}", its_side) for arg in command]
    # The program starts once its address is there: it waits for a line on stdin.
    server = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", 'read _ && exec "$@"', "host", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert server.stdin is not None
    try:
        _wait_for_own_namespace(server.pid)
        inside = ["nsenter", "-t", str(server.pid), "-n", "ip"]
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(server.pid))
        _ip("addr", "add", f"{host_side}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        for args in (
            ("addr", "add", f"{its_side}/30", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            ("link", "set", "lo", "up"),
        ):
            subprocess.run([*inside, *args], check=True, capture_output=True)
        server.stdin.write(b"go\n")
        server.stdin.flush()
        deadline = time.monotonic() + 30
        while True:  # the control: from the host, the test host is there
            try:
                socket.create_connection((its_side, port), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield its_side
    finally:
        server.kill()
        server.wait()
        subprocess.run(["ip", "link", "del", veth], check=False, capture_output=True)
