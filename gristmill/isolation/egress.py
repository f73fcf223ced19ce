"""Where a network-on sandbox may connect: the egress policy, and its nftables rendering.

A network-on job (and every resolve or install step) gets a network namespace of its
own, reached from the outside world through `slirp4netns` (`netns.py`). What may leave
it is decided here, in the service, and applied as an nftables ruleset inside that
namespace before the job starts; the job cannot change it (it has no capability over
the namespace, and seccomp refuses netlink sockets).

A packet passes when it goes to the namespace's own loopback, or to the policy's DNS
resolver on port 53, or when:

- it is not for the host itself (any of its addresses);
- it is not for any other resolver (ports 53 and 853): DNS goes through ours only;
- it passes every gate: a gate is either a deny list (the default: loopback,
  link-local and the cloud metadata address, private ranges, carrier-grade NAT,
  multicast, IPv6 ULA and link-local, the networks the host is directly on) or an
  allow list of networks and ports (an
  operator's `network.allow`, a request's `network_allow`, the registries of a
  resolve step). A request's gate can only narrow the server's.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from gristmill.isolation.profile import BindMount, SandboxProfile

__all__ = [
    "DEFAULT_DENY",
    "DNS_ADDRESS",
    "Destination",
    "EgressPolicy",
    "Gate",
    "PolicyError",
    "host_addresses",
    "local_networks",
    "parse_destinations",
    "parse_entry",
    "policy",
    "split_list",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS_ADDRESS = "10.0.2.3"
"""slirp4netns's DNS forwarder inside the namespace: it asks the host's resolver."""

DEFAULT_DENY: tuple[Network, ...] = tuple(
    ipaddress.ip_network(text)
    for text in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private (RFC 1918); slirp's own 10.0.2.2 (the host) among it
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local: 169.254.169.254 is the cloud metadata service
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/127",  # unspecified, loopback
        "::ffff:0:0/96",  # IPv4-mapped: the IPv4 rules above, by another name
        "64:ff9b::/96",  # NAT64: the same
        "fc00::/7",  # unique local (ULA)
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)

log = logging.getLogger(__name__)

_HOSTS_TTL_S = 60.0
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


class PolicyError(ValueError):
    """An allow-list entry that is neither a network nor a host name, or a bad port."""


@dataclass(frozen=True)
class Destination:
    """A network, and a port on it (0: any)."""

    network: Network
    port: int = 0

    def nft_match(self) -> str:
        family = "ip" if self.network.version == 4 else "ip6"
        match = f"{family} daddr {self.network}"
        if self.port:
            match += f" meta l4proto {{ tcp, udp }} th dport {self.port}"
        return match


@dataclass(frozen=True)
class Gate:
    """One test a packet must pass: it matches `allow` (when given) and misses `deny`."""

    allow: tuple[Destination, ...] | None = None
    deny: tuple[Network, ...] = ()


@dataclass(frozen=True)
class EgressPolicy:
    """The gates of one sandbox, and the names its /etc/hosts pins to addresses."""

    gates: tuple[Gate, ...]
    hosts: tuple[tuple[str, str], ...] = ()
    # Whether the job may look names up at all (through our resolver only). Without it,
    # the names of the allow lists still work, pinned in /etc/hosts, and no query can
    # carry data out through the host's resolver.
    dns: bool = True

    def narrowed(self, gate: Gate, hosts: Iterable[tuple[str, str]] = ()) -> EgressPolicy:
        """This policy with one more gate (a request's allow list): never wider."""
        return replace(self, gates=(*self.gates, gate), hosts=(*self.hosts, *hosts))

    def hosts_file(self) -> str:
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{address} {name}" for name, address in dict.fromkeys(self.hosts)]
        return "\n".join(lines) + "\n"

    def applied_to(self, profile: SandboxProfile, directory: Path) -> SandboxProfile:
        """`profile` with this policy's /etc/hosts and an /etc/resolv.conf naming our
        resolver only, both written into `directory` (the host's name a job never needs)."""
        directory.mkdir(mode=0o755, exist_ok=True)
        files = {"/etc/hosts": self.hosts_file(), "/etc/resolv.conf": f"nameserver {DNS_ADDRESS}\n"}
        mounts = [m for m in profile.mounts if m.target not in files]
        for target, text in files.items():
            source = directory / Path(target).name
            source.write_text(text)
            source.chmod(0o644)
            mounts.append(BindMount(str(source), target))
        return replace(profile, mounts=tuple(mounts))

    def nft_ruleset(self, host: Sequence[Network], connections: int = 0) -> str:
        """The ruleset for the sandbox's namespace; `host` are the host's addresses, and
        past `connections` flows (0: no cap) a new one is refused: TCP connections and
        UDP destinations alike (our DNS resolver's among them), as each holds a host
        socket of slirp4netns."""
        refuse = "reject with icmpx type admin-prohibited"
        lines = ["table inet gristmill {"]
        # A token bucket that never refills in a job's lifetime: a count of flows, each
        # told by its first packet (its conntrack entry not yet confirmed; a UDP flow
        # without replies stays "new", a SYN sent again does not count twice).
        new_flow = 'ct status & confirmed == 0 limit name "flows"'
        if connections:
            lines.append(f"  limit flows {{ rate over 1/hour burst {connections} packets }}")
        lines += [
            "  chain output {",
            "    type filter hook output priority 0; policy accept;",
            '    oifname "lo" accept',
        ]
        if self.dns:
            dns = f"ip daddr {DNS_ADDRESS} meta l4proto {{ tcp, udp }} th dport 53"
            if connections:
                lines.append(f"    {dns} {new_flow} {refuse}")
            lines.append(f"    {dns} accept")
        lines += [f"    meta l4proto {{ tcp, udp }} th dport {{ 53, 853 }} {refuse}"]
        lines += [f"    {match} {refuse}" for match in _address_matches(host)]
        for number, _ in enumerate(self.gates):
            lines.append(f"    jump gate{number}")
        if connections:
            lines.append(f"    meta l4proto tcp {new_flow} reject with tcp reset")
            lines.append(f"    meta l4proto udp {new_flow} reject with icmpx type port-unreachable")
        lines.append("  }")
        for number, gate in enumerate(self.gates):
            lines.append(f"  chain gate{number} {{")
            lines += [f"    {match} {refuse}" for match in _address_matches(gate.deny)]
            if gate.allow is not None:
                lines += [f"    {d.nft_match()} return" for d in gate.allow]
                lines.append(f"    {refuse}")
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _address_matches(networks: Iterable[Network]) -> list[str]:
    """One set match per address family, e.g. "ip daddr { 10.0.0.0/8, ... }"."""
    listed = list(networks)
    # Collapsed: an nftables interval set refuses overlapping elements.
    four = ipaddress.collapse_addresses(n for n in listed if isinstance(n, ipaddress.IPv4Network))
    six = ipaddress.collapse_addresses(n for n in listed if isinstance(n, ipaddress.IPv6Network))
    matches = []
    for family, items in (("ip", [str(n) for n in four]), ("ip6", [str(n) for n in six])):
        if items:
            matches.append(f"{family} daddr {{ {', '.join(items)} }}")
    return matches


def _split_port(entry: str) -> tuple[str, int]:
    """ "host:443" or "10.0.0.0/8:5432" or "[2001:db8::1]:443" into its host and port."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    else:
        host, port_text = entry, ""
    if not port_text:
        return host, 0
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise PolicyError(f"{entry!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


@lru_cache(maxsize=256)
def _resolve(name: str, epoch: int) -> tuple[str, ...]:
    """The IPv4 addresses of `name` (the sandboxes have IPv4 only); `epoch` expires them.
    A name that does not resolve has none: the policy lets nothing through for it."""
    try:
        found = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as error:
        log.warning("egress policy: %s does not resolve (%s); nothing reached by it", name, error)
        return ()
    return tuple(dict.fromkeys(str(info[4][0]) for info in found))


def parse_entry(entry: str) -> tuple[Network | str, int]:
    """One allow-list entry as a network or a (lower-case) host name, and its port (0: any);
    PolicyError when it is neither. Resolves nothing."""
    host, port = _split_port(entry.strip())
    try:
        return ipaddress.ip_network(host, strict=False), port
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host.lower()):
        raise PolicyError(f"{entry!r}: neither a network nor a host name")
    return host.lower(), port


def parse_destinations(
    entries: Iterable[str],
) -> tuple[tuple[Destination, ...], tuple[tuple[str, str], ...]]:
    """Allow-list entries ("203.0.113.0/24", "api.example.com:443") as destinations, with
    the name-to-address pairs of the host names among them.

    A name is resolved here, by the service, and pinned in the sandbox's /etc/hosts, so
    that the job connects to the very addresses the policy lets through.
    """
    destinations: list[Destination] = []
    hosts: list[tuple[str, str]] = []
    epoch = int(time.monotonic() // _HOSTS_TTL_S)
    for entry in entries:
        if not entry.strip():
            continue
        target, port = parse_entry(entry)
        if not isinstance(target, str):
            destinations.append(Destination(target, port))
            continue
        for address in _resolve(target, epoch):
            destinations.append(Destination(ipaddress.ip_network(address), port))
            hosts.append((target, address))
    return tuple(destinations), tuple(hosts)


def policy(allow: Iterable[str]) -> EgressPolicy:
    """The policy of an allow list: anywhere but the default deny list when it is empty,
    else only what it names (which may be a private network an operator chose)."""
    entries = [entry for entry in allow if entry.strip()]
    destinations, hosts = parse_destinations(entries)
    if not entries:
        return EgressPolicy((Gate(deny=DEFAULT_DENY + local_networks()),))
    return EgressPolicy((Gate(allow=destinations),), hosts)


def split_list(text: str) -> tuple[str, ...]:
    """A setting's comma-separated list."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def host_addresses() -> tuple[Network, ...]:
    """The host's own addresses: never reachable from a sandbox, whatever a policy allows."""
    return _host(int(time.monotonic() // _HOSTS_TTL_S))[0]


def local_networks() -> tuple[Network, ...]:
    """The networks the host is directly on: refused unless an allow list names them."""
    return _host(int(time.monotonic() // _HOSTS_TTL_S))[1]


@lru_cache(maxsize=1)
def _host(epoch: int) -> tuple[tuple[Network, ...], tuple[Network, ...]]:
    """The host's addresses and networks (`ip -j addr`); `epoch` expires them."""
    shown = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, check=True, text=True
    ).stdout
    addresses: list[Network] = []
    networks: list[Network] = []
    for interface in json.loads(shown):
        for info in interface.get("addr_info", ()):
            address = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            addresses.append(ipaddress.ip_network(address.ip))
            networks.append(address.network)
    return tuple(addresses), tuple(networks)
