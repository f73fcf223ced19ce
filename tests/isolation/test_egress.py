"""The egress policy as data: entries parsed, gates rendered, settings checked."""

from __future__ import annotations

import ipaddress
import re

import pytest

from gristmill.config import ConfigError, NetworkConfig, load_config
from gristmill.errors import InvalidRequest
from gristmill.isolation.egress import DEFAULT_DENY, PolicyError, parse_entry, policy
from gristmill.server.validate import network_allow


@pytest.mark.parametrize(
    ("entry", "target", "port"),
    [
        ("203.0.113.0/24", ipaddress.ip_network("203.0.113.0/24"), 0),
        ("203.0.113.7:443", ipaddress.ip_network("203.0.113.7/32"), 443),
        ("[2001:db8::1]:443", ipaddress.ip_network("2001:db8::1/128"), 443),
        ("2001:db8::/32", ipaddress.ip_network("2001:db8::/32"), 0),
        ("API.example.com:8443", "api.example.com", 8443),
    ],
)
def test_an_entry_is_a_network_or_a_host_name_with_a_port(
    entry: str, target: object, port: int
) -> None:
    assert parse_entry(entry) == (target, port)


@pytest.mark.parametrize("entry", ["host:0", "host:99999", "host:http", "bad_name", "a b", "-x.y"])
def test_a_malformed_entry_is_refused(entry: str) -> None:
    with pytest.raises(PolicyError):
        parse_entry(entry)


def test_the_default_policy_refuses_the_dangerous_ranges_and_nothing_else() -> None:
    ruleset = policy(()).nft_ruleset((ipaddress.ip_network("192.0.2.2/32"),))
    gate = ruleset.split("chain gate0")[1]
    listed = [ipaddress.ip_network(n) for n in re.findall(r"[0-9a-f.:]+/\d+", gate)]
    for network in DEFAULT_DENY:
        assert any(network.subnet_of(n) for n in listed if n.version == network.version)  # type: ignore[arg-type]
    assert "ip daddr { 192.0.2.2/32 } reject" in ruleset  # the host itself, always
    assert "th dport { 53, 853 } reject" in ruleset  # resolvers but ours
    assert " return" not in ruleset  # no allow list: the rest is let through


def test_an_allow_list_lets_through_only_what_it_names() -> None:
    ruleset = policy(("10.1.2.3:5432",)).nft_ruleset(())
    assert "ip daddr 10.1.2.3/32 meta l4proto { tcp, udp } th dport 5432 return" in ruleset
    assert "10.0.0.0/8" not in ruleset  # the operator chose a private address


def test_a_requests_gate_is_added_never_replacing_the_servers() -> None:
    server = policy(())
    narrowed = server.narrowed(policy(("203.0.113.9",)).gates[0])
    assert narrowed.gates[0] == server.gates[0]
    assert "jump gate1" in narrowed.nft_ruleset(())


def test_a_connections_cap_is_one_budget_of_flows() -> None:
    """TCP connections, UDP destinations and DNS queries draw on one budget: each holds a
    host socket of slirp4netns."""
    ruleset = policy(()).nft_ruleset((), 20)
    assert "limit flows { rate over 1/hour burst 20 packets }" in ruleset
    assert ruleset.count('limit name "flows"') == 3  # DNS, then TCP and UDP past the gates
    assert "limit" not in policy(()).nft_ruleset(())


def test_a_malformed_allow_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"network\.allow"):
        NetworkConfig(allow="10.0.0.0/8, not a host")
    with pytest.raises(ConfigError, match=r"deps\.registries"):
        load_config(environ={"GRISTMILL_DEPS_REGISTRIES": "pypi.org:http"})
    config = load_config(environ={"GRISTMILL_NETWORK_ALLOW": "203.0.113.0/24"})
    assert config.network.allow == "203.0.113.0/24"


def test_a_requests_allow_list_is_checked_and_needs_the_network() -> None:
    assert network_allow(["203.0.113.0/24", "api.example.com:443"], True) == (
        "203.0.113.0/24",
        "api.example.com:443",
    )
    with pytest.raises(InvalidRequest, match=r"job.network_allow\[1\]"):
        network_allow(["203.0.113.0/24", "no way"], True)
    with pytest.raises(InvalidRequest, match=r"job\.network_allow"):
        network_allow(["203.0.113.0/24"], False)


def test_a_name_that_does_not_resolve_lets_nothing_through() -> None:
    unresolved = policy(("gristmill-no-such-host.invalid:443",))
    assert unresolved.gates[0].allow == ()
    narrowed = policy(()).narrowed(unresolved.gates[0])
    assert (
        narrowed.nft_ruleset(())
        .rstrip()
        .endswith("reject with icmpx type admin-prohibited\n  }\n}")
    )
