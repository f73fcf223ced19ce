"""Network-on jobs, attacked on both backends: the host is never reachable, the policy holds.

Test hosts live in a network namespace this module makes itself (`unshare --net` and a
veth pair on a private /30), never on a real private address; the permitted
destination is a package registry, the only outside this machine reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gristmill.config import NetworkConfig, PoolConfig
from gristmill.isolation import netns
from gristmill.isolation.egress import host_addresses
from gristmill.isolation.select import open_backend
from gristmill.jobs.executor import Executor
from gristmill.jobs.parts import compose
from gristmill.languages import Registry
from gristmill.model import Job, Outcome, Verdict
from tests.conftest import remove_work_dir
from tests.hosts import namespaced_host

from .conftest import LIMITS

pytestmark = pytest.mark.asyncio(loop_scope="session")

REGISTRY = ("pypi.org", 443)
SERVE_PORT = 8080
BULK_PORT = 8081
BULK_BYTES = 8 << 20
_SERVER = textwrap.dedent(
    """
    import socket, sys, threading
    address = sys.argv[1]
    def serve(port, payload):
        listener = socket.create_server((address, port), backlog=512)
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=reply, args=(connection, payload), daemon=True).start()
    def reply(connection, payload):
        try:
            connection.sendall(payload)
        except OSError:
            pass
        finally:
            connection.close()
    threading.Thread(target=serve, args=(%d, b"x" * %d), daemon=True).start()
    serve(%d, b"hello\\n")
    """
) % (BULK_PORT, BULK_BYTES, SERVE_PORT)


@dataclasses.dataclass(frozen=True)
class Peer:
    """A test host: its address, in a network namespace of its own."""

    address: str


@pytest.fixture(scope="module")
def test_host() -> Iterator[Peer]:
    """A host on a private address, in a network namespace of its own, serving TCP."""
    command = [sys.executable, "-c", _SERVER, "{address}"]
    with namespaced_host(command, SERVE_PORT) as address:
        yield Peer(address)


def _executor(backend: str, network: NetworkConfig, pool: PoolConfig | None = None) -> Executor:
    work_dir = Path(tempfile.mkdtemp(prefix="gristmill-test-", dir="/var/tmp"))
    work_dir.chmod(0o755)
    backend_ = open_backend(backend, work_dir)
    limits = dataclasses.replace(LIMITS, wall_time_ms=20_000, cpu_time_ms=10_000)
    return Executor(
        compose(Registry(), backend_, work_dir, pool=pool, pool_limits=limits, network=network)
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["process", "nsjail"])
async def servers(
    request: pytest.FixtureRequest, test_host: Peer
) -> AsyncIterator[dict[str, Executor]]:
    """Per backend: a server with the default policy, and one whose operator allows the
    test host (and the registry) only."""
    allow = f"{test_host.address}:{SERVE_PORT},{test_host.address}:{BULK_PORT},pypi.org:443"
    warm = PoolConfig(enabled=True, per_language=1, max_sandboxes=2, idle_s=60)
    executors = {
        "default": _executor(request.param, NetworkConfig()),
        "allowing": _executor(request.param, NetworkConfig(allow=allow)),
        "no_dns": _executor(request.param, NetworkConfig(allow="pypi.org:443", dns=False)),
        "warm": _executor(request.param, NetworkConfig(allow=allow), warm),
    }
    yield executors
    for executor in executors.values():
        await executor.close()
        remove_work_dir(executor.work_dir)


async def _run(
    executor: Executor,
    code: str,
    args: dict[str, Any] | None = None,
    language: str = "python",
    network_allow: tuple[str, ...] = (),
    **limits: Any,
) -> Outcome:
    job = Job(
        id="network-test",
        language=language,
        code=textwrap.dedent(code),
        entry_point="main",
        args=args or {},
        limits=dataclasses.replace(
            LIMITS, network=True, wall_time_ms=20_000, cpu_time_ms=10_000, **limits
        ),
        network_allow=network_allow,
    )
    return await executor.run(job)


def _result(outcome: Outcome) -> Any:
    assert outcome.verdict is Verdict.SUCCESS, (outcome.detail, outcome.stderr.data[-2000:])
    return json.loads(outcome.result_json)


CONNECT = """
import errno, socket
def main(targets: list):
    seen = {}
    for host, port in targets:
        try:
            socket.create_connection((host, port), timeout=3).close()
            seen[f"{host}:{port}"] = "connected"
        except TimeoutError:
            seen[f"{host}:{port}"] = "timed out"
        except OSError as error:
            seen[f"{host}:{port}"] = errno.errorcode.get(error.errno or 0, str(error))
    return seen
"""
REFUSALS = {"ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "EACCES", "EPERM"}


async def test_a_permitted_destination_is_reached_and_counted(
    servers: dict[str, Executor],
) -> None:
    outcome = await _run(servers["default"], CONNECT, {"targets": [REGISTRY]})
    assert _result(outcome) == {"pypi.org:443": "connected"}
    assert outcome.usage.network_sent_bytes > 0
    assert outcome.usage.network_received_bytes > 0


async def test_the_job_has_a_network_namespace_of_its_own(servers: dict[str, Executor]) -> None:
    code = "def main():\n    return sorted(open('/proc/net/dev').read().split()[20::17])\n"
    interfaces = _result(await _run(servers["default"], code))
    assert interfaces == ["lo:", "tap0:"]


@pytest.mark.attack("network: reaching what it must not")
async def test_a_listener_on_the_hosts_loopback_is_not_reached(
    servers: dict[str, Executor],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        outcome = await _run(servers["default"], CONNECT, {"targets": [["127.0.0.1", port]]})
        bash = await _run(
            servers["default"],
            f"if timeout 3 bash -c 'exec 5<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null;"
            " then echo connected; else echo refused; fi\n",
            language="bash",
        )
    assert _result(outcome) == {f"127.0.0.1:{port}": "ECONNREFUSED"}
    assert _result(bash) == "refused"


@pytest.mark.attack("network: reaching what it must not")
async def test_the_hosts_own_addresses_are_refused(servers: dict[str, Executor]) -> None:
    """A listener on every address, as a service's gRPC port may be: none of the host's
    addresses reaches it, nor slirp4netns's alias of the host (10.0.2.2)."""
    with socket.create_server(("0.0.0.0", 0)) as listener:
        port = listener.getsockname()[1]
        own = [str(n.network_address) for n in host_addresses() if not n.is_link_local]
        targets = [[address, port] for address in [*own, "10.0.2.2"]]
        for executor in servers.values():
            seen = _result(await _run(executor, CONNECT, {"targets": targets}))
            assert set(seen.values()) <= REFUSALS, seen


@pytest.mark.attack("network: reaching what it must not")
async def test_an_abstract_unix_socket_of_the_host_is_not_reached(
    servers: dict[str, Executor],
) -> None:
    name = f"gristmill-network-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("\0" + name)
        listener.listen()
        code = """
        import errno, socket
        def main(name: str):
            try:
                socket.socket(socket.AF_UNIX).connect("\\0" + name)
            except OSError as error:
                return errno.errorcode[error.errno]
            return "connected"
        """
        outcome = await _run(servers["default"], code, {"name": name})
    assert _result(outcome) == "ECONNREFUSED"


@pytest.mark.attack("network: reaching what it must not")
async def test_metadata_link_local_and_private_addresses_are_refused(
    servers: dict[str, Executor], test_host: Peer
) -> None:
    targets = [
        ["169.254.169.254", 80],
        ["169.254.1.1", 80],
        [test_host.address, SERVE_PORT],
        ["10.0.2.3", 80],
        ["100.64.0.1", 80],
        ["172.16.0.1", 80],
        ["192.168.0.1", 80],
    ]
    seen = _result(await _run(servers["default"], CONNECT, {"targets": targets}))
    assert set(seen.values()) <= REFUSALS, seen
    bash = await _run(
        servers["default"],
        f"if timeout 3 bash -c 'exec 5<>/dev/tcp/{test_host.address}/{SERVE_PORT}' 2>/dev/null;"
        " then echo connected; else echo refused; fi\n",
        language="bash",
    )
    assert _result(bash) == "refused"


async def test_an_operators_allow_list_reaches_the_test_host_and_nothing_else(
    servers: dict[str, Executor], test_host: Peer
) -> None:
    targets = [[test_host.address, SERVE_PORT], list(REGISTRY), [test_host.address, 22]]
    seen = _result(await _run(servers["allowing"], CONNECT, {"targets": targets}))
    assert seen[f"{test_host.address}:{SERVE_PORT}"] == "connected"
    assert seen["pypi.org:443"] == "connected"
    assert seen[f"{test_host.address}:22"] in REFUSALS


@pytest.mark.attack("network: reaching what it must not")
async def test_a_requests_allow_list_narrows_the_servers_and_never_widens_it(
    servers: dict[str, Executor], test_host: Peer
) -> None:
    targets = [[test_host.address, SERVE_PORT], list(REGISTRY)]
    narrowed = await _run(
        servers["allowing"], CONNECT, {"targets": targets}, network_allow=("pypi.org:443",)
    )
    seen = _result(narrowed)
    assert seen[f"{test_host.address}:{SERVE_PORT}"] == "EHOSTUNREACH"
    assert seen["pypi.org:443"] == "connected"
    widened = await _run(
        servers["default"],
        CONNECT,
        {"targets": targets},
        network_allow=(f"{test_host.address}:{SERVE_PORT}",),
    )
    assert _result(widened)[f"{test_host.address}:{SERVE_PORT}"] in REFUSALS


@pytest.mark.attack("network: reaching what it must not")
async def test_dns_goes_through_the_policys_resolver_only(servers: dict[str, Executor]) -> None:
    code = """
    import errno, socket
    def main():
        found = socket.getaddrinfo("pypi.org", 443, socket.AF_INET)[0][4][0]
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=3).close()
            other = "connected"
        except OSError as error:
            other = errno.errorcode.get(error.errno or 0, str(error))
        return {"resolved": bool(found), "other_resolver": other}
    """
    seen = _result(await _run(servers["default"], code))
    assert seen["resolved"] is True
    assert seen["other_resolver"] in REFUSALS


@pytest.mark.attack("network: reaching what it must not")
async def test_without_dns_only_the_allow_lists_names_resolve(
    servers: dict[str, Executor],
) -> None:
    code = """
    import socket
    def main():
        seen = {}
        for name in ("pypi.org", "registry.npmjs.org"):
            try:
                socket.getaddrinfo(name, 443, socket.AF_INET)
                seen[name] = "resolved"
            except OSError:
                seen[name] = "unresolved"
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return seen
    """
    seen = _result(await _run(servers["no_dns"], code))
    assert seen == {"pypi.org": "resolved", "registry.npmjs.org": "unresolved"}


@pytest.mark.attack("network: reaching what it must not")
async def test_raw_packet_netlink_and_vsock_sockets_are_refused(
    servers: dict[str, Executor],
) -> None:
    code = """
    import errno, socket
    KINDS = {
        "raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0),
        "netlink": (socket.AF_NETLINK, socket.SOCK_RAW, 0),
        "vsock": (socket.AF_VSOCK, socket.SOCK_STREAM, 0),
    }
    def main():
        seen = {}
        for name, kind in KINDS.items():
            try:
                socket.socket(*kind).close()
                seen[name] = "opened"
            except OSError as error:
                seen[name] = errno.errorcode[error.errno]
        return seen
    """
    seen = _result(await _run(servers["default"], code))
    assert set(seen.values()) <= {"EPERM", "EAFNOSUPPORT", "EACCES"}, seen


@pytest.mark.attack("network: reaching what it must not")
async def test_routes_and_addresses_cannot_be_changed(servers: dict[str, Executor]) -> None:
    code = """
    import errno, fcntl, socket, struct
    SIOCSIFFLAGS, SIOCSIFADDR, SIOCADDRT = 0x8914, 0x8916, 0x890B
    def main():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seen = {}
        tries = {
            "interface down": (SIOCSIFFLAGS, struct.pack("16sH22x", b"tap0", 0)),
            "address": (SIOCSIFADDR, struct.pack("16sH2s4s8x", b"tap0", socket.AF_INET,
                                                 b"\\0\\0", socket.inet_aton("10.0.2.50"))),
            "route": (SIOCADDRT, bytes(120)),
        }
        for name, (request, argument) in tries.items():
            try:
                fcntl.ioctl(s, request, argument)
                seen[name] = "changed"
            except OSError as error:
                seen[name] = errno.errorcode[error.errno]
        return seen
    """
    seen = _result(await _run(servers["default"], code))
    assert set(seen.values()) <= {"EPERM", "EACCES"}, seen
    bash = await _run(
        servers["default"],
        "if ip route add 203.0.113.0/24 dev tap0 2>/dev/null || ip link set tap0 down"
        " 2>/dev/null; then echo changed; else echo refused; fi\n",
        language="bash",
    )
    assert _result(bash) == "refused"


@pytest.mark.attack("network: caps")
async def test_a_flood_of_connections_stops_at_the_cap(
    servers: dict[str, Executor], test_host: Peer
) -> None:
    code = """
    import errno, socket
    def main(host: str, port: int):
        opened, refused = [], 0
        for _ in range(60):
            try:
                opened.append(socket.create_connection((host, port), timeout=3))
            except OSError:
                refused += 1
        return {"opened": len(opened), "refused": refused}
    """
    args = {"host": test_host.address, "port": SERVE_PORT}
    seen = _result(await _run(servers["allowing"], code, args, network_connections=20))
    assert seen == {"opened": 20, "refused": 40}


@pytest.mark.attack("network: caps")
async def test_past_the_bytes_cap_the_job_is_stopped(
    servers: dict[str, Executor], test_host: Peer
) -> None:
    code = """
    import socket
    def main(host: str, port: int):
        with socket.create_connection((host, port), timeout=5) as s:
            total = 0
            while chunk := s.recv(65536):
                total += len(chunk)
        return total
    """
    args = {"host": test_host.address, "port": BULK_PORT}
    began = time.monotonic()
    outcome = await _run(servers["allowing"], code, args, network_bytes=1 << 20)
    assert outcome.verdict is Verdict.NETWORK_LIMIT, (outcome.detail, outcome.result_json)
    assert outcome.usage.network_received_bytes > 1 << 20
    assert time.monotonic() - began < 15
    under = await _run(servers["allowing"], code, args, network_bytes=64 << 20)
    assert _result(under) == BULK_BYTES


async def _warm(executor: Executor, code: str, args: dict[str, Any], **limits: Any) -> Outcome:
    """The job in a warm network-on sandbox, once the pool has one."""
    if not executor.pool.ready("python", network=True):
        await _run(executor, "def main():\n    return 0\n")
    for _ in range(300):
        if executor.pool.ready("python", network=True):
            break
        await asyncio.sleep(0.05)
    outcome = await _run(executor, code, args, **limits)
    assert outcome.warm_sandbox, outcome.detail
    return outcome


@pytest.mark.attack("network: reaching what it must not")
async def test_a_warm_network_sandbox_holds_the_same_policy_and_caps(
    servers: dict[str, Executor], test_host: Peer
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        targets = [[test_host.address, SERVE_PORT], ["127.0.0.1", port], ["169.254.169.254", 80]]
        outcome = await _warm(servers["warm"], CONNECT, {"targets": targets})
    seen = _result(outcome)
    assert seen[f"{test_host.address}:{SERVE_PORT}"] == "connected"
    assert seen[f"127.0.0.1:{port}"] in REFUSALS
    assert seen["169.254.169.254:80"] in REFUSALS
    assert 0 < outcome.usage.network_sent_bytes < 64 << 10
    download = """
    import socket
    def main(host: str, port: int):
        with socket.create_connection((host, port), timeout=5) as s:
            while s.recv(65536):
                pass
    """
    args = {"host": test_host.address, "port": BULK_PORT}
    capped = await _warm(servers["warm"], download, args, network_bytes=1 << 20)
    assert capped.verdict is Verdict.NETWORK_LIMIT, capped.detail


async def test_a_job_with_its_own_allow_list_starts_cold(servers: dict[str, Executor]) -> None:
    outcome = await _run(
        servers["warm"], CONNECT, {"targets": [REGISTRY]}, network_allow=("pypi.org:443",)
    )
    assert _result(outcome) == {"pypi.org:443": "connected"}
    assert not outcome.warm_sandbox


HOARD_TCP = """
import socket, time
def main(connections: int):
    listener = socket.create_server(("127.0.0.1", 0), backlog=connections)
    held, sent, chunk = [], 0, b"x" * 65536
    for _ in range(connections):
        s = socket.create_connection(listener.getsockname())
        s.setblocking(False)
        held.append(s)
    for s in held:  # written and never read: the kernel holds it all
        try:
            while True:
                sent += s.send(chunk)
        except BlockingIOError:
            pass
    time.sleep(5)
    return sent
"""
HOARD_UDP = """
import socket, time
def main(sockets: int):
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held, sent = [], 0
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        held.append(s)
        for _ in range(8):  # queued, never received
            sent += sender.sendto(b"y" * 60000, s.getsockname())
    time.sleep(5)
    return sent
"""


@pytest.mark.attack("network: socket memory")
@pytest.mark.parametrize(
    ("code", "args"),
    [(HOARD_TCP, {"connections": 100}), (HOARD_UDP, {"sockets": 500})],
    ids=["tcp", "udp"],
)
async def test_socket_buffers_a_job_holds_are_its_memory(
    servers: dict[str, Executor], code: str, args: dict[str, int]
) -> None:
    """100 loopback connections written and never read held 395 MB of kernel memory for a
    64 MiB job, billed 13 MB, SUCCESS; 500 UDP sockets' unread queues the same way."""
    outcome = await _run(servers["default"], code, args, memory_bytes=64 << 20)
    assert outcome.verdict is Verdict.MEMORY_LIMIT, (outcome.detail, outcome.result_json)
    assert "socket buffers" in outcome.detail


async def test_sockets_beside_room_left_are_let_run(servers: dict[str, Executor]) -> None:
    """The control: two connections' full buffers (a few MiB each) in a 64 MiB job."""
    outcome = await _run(servers["default"], HOARD_TCP, {"connections": 2}, memory_bytes=64 << 20)
    assert _result(outcome) > 1 << 20


@pytest.mark.attack("network: IPv6")
async def test_ipv6_is_refused_at_once(servers: dict[str, Executor]) -> None:
    """IPv6 is off in the job's namespace: no interface has an IPv6 address (tap0's
    link-local one, once valid, made a connect() to fe80::1%tap0 wait 3 s for a
    neighbour that never answers), and every connect() fails with an error."""
    code = """
    import errno, socket
    def main():
        seen = {}
        for address in ("fe80::1%tap0", "fe80::2%lo", "2001:db8::1", "::1"):
            try:
                socket.create_connection((address, 80), timeout=3).close()
                seen[address] = "connected"
            except TimeoutError:
                seen[address] = "timed out"
            except OSError as error:
                seen[address] = errno.errorcode.get(error.errno or 0, str(error))
        return {"addresses": open("/proc/net/if_inet6").read(), "connects": seen}
    """
    seen = _result(await _run(servers["default"], code))
    assert seen["addresses"] == "", seen
    assert set(seen["connects"].values()) <= {"ENETUNREACH", "EADDRNOTAVAIL"}, seen


def _running(pid: int) -> bool:
    """Whether `pid` is not exiting: an exiting process has lost its memory (its size,
    field 23 of its stat) and, soon after, its groups for the root's."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[20]) > 0
    except (OSError, ValueError, IndexError):
        return False


def _network_helpers() -> list[int]:
    """The slirp4netns processes this test process's fork servers started (its jobs')."""
    parents: dict[int, int] = {}
    helpers = []
    for entry in (p.name for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            name, _, rest = Path(f"/proc/{entry}/stat").read_text().rpartition(")")
        except OSError:
            continue
        parents[int(entry)] = int(rest.split()[1])
        if name.endswith("(slirp4netns"):
            helpers.append(int(entry))
    mine = []
    for pid in helpers:
        ancestor = pid
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = parents.get(ancestor, 1)
        if ancestor == os.getpid():
            mine.append(pid)
    return mine


def _groups(pid: int) -> set[str]:
    """The kinds of group ("job", "server", "" for the root) `pid` is in for memory and
    CPU time; none if it is exiting (then it has left them, or is about to)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    if not _running(pid):
        return set()
    kinds = set()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if {"memory", "cpuacct"} & set(controllers.split(",")):
            kinds.add(path.rpartition("/")[2].partition("-")[0])
    return kinds


UDP_FLOOD = """
import socket, time
def main(targets: list, datagrams: int):
    for number in range(datagrams):  # each from a socket of its own: a flow each
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(b"x", tuple(targets[number % len(targets)]))
            except OSError:
                pass
    time.sleep(3)
    return datagrams
"""


@pytest.mark.attack("network: the helper's cost")
async def test_the_network_helper_is_the_jobs_and_its_descriptors_are_bounded(
    servers: dict[str, Executor],
) -> None:
    """slirp4netns holds a host socket per flow: 5,000 datagrams from fresh sockets made
    it hold 1,868 host descriptors, outside the job's cgroup (its CPU was nobody's). UDP
    flows now count toward the connections cap, the helper's descriptors are capped by
    it, and the helper is in the job's memory and CPU groups."""
    targets = [["198.51.100.1", 9], ["10.0.2.3", 53]]  # somewhere outside, our resolver
    job = asyncio.ensure_future(
        _run(
            servers["default"],
            UDP_FLOOD,
            {"targets": targets, "datagrams": 2000},
            network_connections=100,
        )
    )
    most, groups = 0, set()
    while not job.done():
        for pid in _network_helpers():
            with contextlib.suppress(OSError):
                most = max(most, sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()))
                groups |= _groups(pid)
        await asyncio.sleep(0.05)
    assert _result(await job) == 2000
    assert 0 < most <= 100 + netns.HELPER_DESCRIPTORS, most
    assert groups == {"job"}, groups
