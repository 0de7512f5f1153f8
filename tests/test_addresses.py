"""workers.addresses: which addresses the SSRF guard blocks, how the settings lift it, and the guarded resolver."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from crawlq.settings import Settings
from workers.addresses import AddressPolicy, BlockedAddress, GuardedResolver, literal_address

pytestmark = pytest.mark.timeout(10)

BLOCKED = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "10.0.0.1",  # RFC 1918
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",  # link-local, cloud metadata
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",  # IPv6 link-local
    "fc00::1",  # unique local
    "fd00:ec2::254",  # AWS metadata over IPv6
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
BLOCKED_BUT_NOT_MULTICAST = [a for a in BLOCKED if not ipaddress.ip_address(a).is_multicast]


def policy(**overrides: object) -> AddressPolicy:
    values: dict[str, Any] = dict(allow_private=False, allowed_networks=[])
    values.update(overrides, _env_file=None)
    return AddressPolicy(Settings(**values))


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_by_default(address: str) -> None:
    reason = policy().blocked_reason(ipaddress.ip_address(address))
    assert reason is not None


@pytest.mark.parametrize("address", BLOCKED)
def test_the_message_says_how_to_allow_it(address: str) -> None:
    reason = policy().blocked_reason(ipaddress.ip_address(address)) or ""
    assert "CRAWLQ_ALLOWED_NETWORKS" in reason, reason


@pytest.mark.parametrize("address", BLOCKED_BUT_NOT_MULTICAST)
def test_private_message_names_allow_private(address: str) -> None:
    reason = policy().blocked_reason(ipaddress.ip_address(address)) or ""
    assert "CRAWLQ_ALLOW_PRIVATE=1" in reason, reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert policy().blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", BLOCKED_BUT_NOT_MULTICAST)
def test_allow_private_lifts_the_block(address: str) -> None:
    assert policy(allow_private=True).blocked_reason(ipaddress.ip_address(address)) is None


def test_allow_private_does_not_open_multicast() -> None:
    """Multicast is never a TCP peer; allow_private leaves it blocked, an explicit network still allows it."""
    assert policy(allow_private=True).blocked_reason(ipaddress.ip_address("224.0.0.1")) is not None
    assert policy(allowed_networks=["224.0.0.0/4"]).blocked_reason(ipaddress.ip_address("224.0.0.1")) is None


@pytest.mark.parametrize("address", BLOCKED)
def test_allowed_networks_lift_exactly_their_network(address: str) -> None:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None) or ip
    network = f"{mapped}/{mapped.max_prefixlen}"
    assert policy(allowed_networks=[network]).blocked_reason(ip) is None
    other = "192.0.2.0/24" if mapped.version == 4 else "2001:db8::/32"
    assert policy(allowed_networks=[other]).blocked_reason(ip) is not None


def test_allowed_networks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLQ_ALLOWED_NETWORKS", "127.0.0.2/32, 10.1.0.0/16")
    monkeypatch.delenv("CRAWLQ_ALLOW_PRIVATE", raising=False)
    no_dotenv: dict[str, Any] = {"_env_file": None}
    guard = AddressPolicy(Settings(**no_dotenv))
    assert guard.blocked_reason(ipaddress.ip_address("127.0.0.2")) is None
    assert guard.blocked_reason(ipaddress.ip_address("10.1.200.3")) is None
    assert guard.blocked_reason(ipaddress.ip_address("127.0.0.1")) is not None
    assert guard.blocked_reason(ipaddress.ip_address("10.2.0.1")) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("example.com", None),
        ("xn--bcher-kva.test", None),
        ("", None),
    ],
)
def test_literal_address(host: str, expected: str | None) -> None:
    found = literal_address(host)
    assert (str(found) if found is not None else None) == expected


class StubResolver(AbstractResolver):
    """A DNS answer we choose: host name -> addresses."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_refuses_a_name_that_resolves_only_to_blocked_addresses() -> None:
    stub = StubResolver({"rebind.test": ["127.0.0.1", "169.254.169.254"]})
    resolver = GuardedResolver(policy(), stub)
    with pytest.raises(BlockedAddress) as caught:
        await resolver.resolve("rebind.test", 80)
    assert "rebind.test" in str(caught.value) and "CRAWLQ_ALLOW_PRIVATE" in str(caught.value)
    assert isinstance(caught.value, OSError)  # aiohttp wraps it as a connector error


async def test_resolver_keeps_only_the_allowed_addresses() -> None:
    stub = StubResolver({"mixed.test": ["10.0.0.7", "93.184.216.34", "::1", "2606:4700:4700::1111"]})
    resolver = GuardedResolver(policy(), stub)
    kept = await resolver.resolve("mixed.test", 443)
    assert [entry["host"] for entry in kept] == ["93.184.216.34", "2606:4700:4700::1111"]
    assert all(entry["port"] == 443 for entry in kept)


async def test_resolver_honours_the_allowlist_and_closes_its_inner_resolver() -> None:
    stub = StubResolver({"internal.test": ["127.0.0.2"]})
    resolver = GuardedResolver(policy(allowed_networks=["127.0.0.2/32"]), stub)
    assert [entry["host"] for entry in await resolver.resolve("internal.test")] == ["127.0.0.2"]
    await resolver.close()
    assert stub.closed
