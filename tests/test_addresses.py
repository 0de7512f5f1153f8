"""workers.addresses: which addresses the SSRF guard blocks, how the settings lift it, and the guarded resolver."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from crawlq.addresses import AddressPolicy, BlockedAddress, GuardedResolver, embedded_ipv4, literal_address
from crawlq.settings import Settings
from tests.conftest import make_settings

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
    "169.254.170.2",  # AWS ECS credentials
    "100.100.100.200",  # Alibaba Cloud metadata (CGNAT range)
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",  # IPv6 link-local
    "fc00::1",  # unique local
    "fec0::1",  # deprecated site-local
    "feff:ffff::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "64:ff9b:1::808:808",  # NAT64 local-use prefix: not public whatever it carries
    "2001:0:836b:4179:0:0:f7f7:f7f7",  # Teredo: 2001::/32 is not globally reachable
]

# (address, form, embedded IPv4): every IPv6 form that carries an IPv4 address, carrying a blocked one
EMBEDDED = [
    ("::ffff:127.0.0.1", "IPv4-mapped", "127.0.0.1"),
    ("::ffff:169.254.169.254", "IPv4-mapped", "169.254.169.254"),
    ("::ffff:10.0.0.1", "IPv4-mapped", "10.0.0.1"),
    ("::7f00:1", "IPv4-compatible", "127.0.0.1"),
    ("::a9fe:a9fe", "IPv4-compatible", "169.254.169.254"),
    ("::a00:1", "IPv4-compatible", "10.0.0.1"),
    ("::ffff:0:7f00:1", "IPv4-translated", "127.0.0.1"),
    ("::ffff:0:a9fe:a9fe", "IPv4-translated", "169.254.169.254"),
    ("64:ff9b::7f00:1", "NAT64", "127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64", "169.254.169.254"),
    ("64:ff9b::6464:64c8", "NAT64", "100.100.100.200"),
    ("64:ff9b::c0a8:101", "NAT64", "192.168.1.1"),
    ("64:ff9b:1::7f00:1", "NAT64 local-use /96", "127.0.0.1"),
    ("64:ff9b:1::a9fe:a9fe", "NAT64 local-use /96", "169.254.169.254"),
    ("64:ff9b:1:a9fe:a9:fe00::", "NAT64 local-use /48", "169.254.169.254"),  # RFC 6052: bits 64-71 skipped
    ("64:ff9b:1:a9:fe:a9fe::", "NAT64 local-use /56", "169.254.169.254"),
    ("64:ff9b:1:0:a9:fea9:fe00:0", "NAT64 local-use /64", "169.254.169.254"),
    ("2002:7f00:1::", "6to4", "127.0.0.1"),
    ("2002:a9fe:a9fe::1", "6to4", "169.254.169.254"),
    ("2002:a00:1::", "6to4", "10.0.0.1"),
    ("2001:0:836b:4179::80ff:fffe", "Teredo client", "127.0.0.1"),  # client = last 32 bits XOR 0xffffffff
    ("2001:0:836b:4179::5601:5601", "Teredo client", "169.254.169.254"),
    ("2001:0:a9fe:a9fe::f7f7:f7f7", "Teredo server", "169.254.169.254"),  # server = bits 32-64
    ("2001:0:a00:1::f7f7:f7f7", "Teredo server", "10.0.0.1"),
]
METADATA = ["169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"] + [
    address for address, _, ipv4 in EMBEDDED if ipv4 in ("169.254.169.254", "100.100.100.200")
]
#: forms whose IPv6 address is public in itself, so only the IPv4 address they carry can block them
SELF_PUBLIC_FORMS = ("IPv4-mapped", "IPv4-compatible", "IPv4-translated", "NAT64", "6to4")
LOOPBACK_FORMS = [address for address, form, ipv4 in EMBEDDED if ipv4 == "127.0.0.1" and form in SELF_PUBLIC_FORMS]
LOOPBACK_FORMS.append("2001:0:7f00:1::80ff:fffe")  # Teredo with server and client 127.0.0.1
PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "64:ff9b::101:101",
]
ALL_BLOCKED = BLOCKED + [address for address, _, _ in EMBEDDED]
NOT_MULTICAST = [a for a in ALL_BLOCKED if not ipaddress.ip_address(a).is_multicast]
PRIVATE = [a for a in NOT_MULTICAST if a not in METADATA]
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]


def policy(**overrides: object) -> AddressPolicy:
    values: dict[str, Any] = dict(allow_private=False, allowed_networks=[])
    return AddressPolicy(make_settings(**{**values, **overrides}))


def reason_for(address: str, **overrides: object) -> str | None:
    return policy(**overrides).blocked_reason(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALL_BLOCKED)
def test_blocked_by_default(address: str) -> None:
    assert reason_for(address) is not None


@pytest.mark.parametrize("address", ALL_BLOCKED)
def test_the_message_says_how_to_allow_it(address: str) -> None:
    reason = reason_for(address) or ""
    assert "CRAWLQ_ALLOWED_NETWORKS" in reason, reason


@pytest.mark.parametrize("address", PRIVATE)
def test_private_message_names_allow_private(address: str) -> None:
    reason = reason_for(address) or ""
    assert "set CRAWLQ_ALLOW_PRIVATE=1" in reason, reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert reason_for(address) is None


@pytest.mark.parametrize("address", PRIVATE)
def test_allow_private_lifts_the_block(address: str) -> None:
    assert reason_for(address, allow_private=True) is None


def test_allow_private_does_not_open_multicast() -> None:
    """Multicast is never a TCP peer; allow_private leaves it blocked, an explicit network still allows it."""
    assert reason_for("224.0.0.1", allow_private=True) is not None
    assert reason_for("64:ff9b::e000:1", allow_private=True) is not None  # multicast carried by NAT64
    assert reason_for("224.0.0.1", allowed_networks=["224.0.0.0/4"]) is None


@pytest.mark.parametrize("address", METADATA)
def test_allow_private_does_not_open_cloud_metadata(address: str) -> None:
    reason = reason_for(address, allow_private=True) or ""
    assert "cloud metadata" in reason and "even with CRAWLQ_ALLOW_PRIVATE=1" in reason, reason
    assert "/32 to CRAWLQ_ALLOWED_NETWORKS" in reason or "/128 to CRAWLQ_ALLOWED_NETWORKS" in reason, reason
    network = reason.split("(add ")[1].split(" to CRAWLQ_ALLOWED_NETWORKS")[0]
    assert reason_for(address, allow_private=True, allowed_networks=[network]) is None, "the named network"


@pytest.mark.parametrize(("address", "form", "ipv4"), EMBEDDED)
def test_every_ipv6_form_is_judged_by_the_ipv4_it_carries(address: str, form: str, ipv4: str) -> None:
    ip = ipaddress.IPv6Address(address)
    assert (form, ipaddress.IPv4Address(ipv4)) in embedded_ipv4(ip)
    reason = reason_for(address) or ""
    if form in SELF_PUBLIC_FORMS:
        assert f"{ip} carries the {form} address {ipv4}" in reason, reason
    else:  # Teredo and NAT64 local-use addresses are not public themselves, whatever they carry
        assert reason.startswith((f"{ip} carries the {form} address {ipv4}", f"{ip} is not a public address")), reason


@pytest.mark.parametrize(("address", "form", "ipv4"), EMBEDDED)
def test_allowing_a_carried_ipv4_or_the_ipv6_itself_lifts_the_block(address: str, form: str, ipv4: str) -> None:
    assert reason_for(address, allowed_networks=[f"{address}/128"]) is None
    lifted = reason_for(address, allowed_networks=[f"{ipv4}/32"]) is None
    # one carried address is not enough when the form carries more (Teredo) or is not public itself (local-use)
    assert lifted == (form in SELF_PUBLIC_FORMS)


@pytest.mark.parametrize("address", LOOPBACK_FORMS + ["::1", "127.0.0.1", "127.9.9.9"])
def test_loopback_forms_are_allowed_only_with_the_loopback_networks(address: str) -> None:
    assert reason_for(address) is not None
    assert reason_for(address, allowed_networks=["10.0.0.0/8", "fe80::/10"]) is not None
    assert reason_for(address, allowed_networks=LOOPBACK_NETWORKS) is None


def test_a_teredo_address_is_allowed_when_both_its_addresses_are() -> None:
    both_loopback = "2001:0:7f00:1::80ff:fffe"  # server 127.0.0.1, client 127.0.0.1
    assert embedded_ipv4(ipaddress.IPv6Address(both_loopback)) == [
        ("Teredo server", ipaddress.IPv4Address("127.0.0.1")),
        ("Teredo client", ipaddress.IPv4Address("127.0.0.1")),
    ]
    assert reason_for(both_loopback, allowed_networks=["127.0.0.0/8"]) is None
    assert reason_for(both_loopback, allowed_networks=["127.0.0.1/32"]) is None
    assert reason_for("2001:0:836b:4179::80ff:fffe", allowed_networks=["127.0.0.0/8"]) is not None


@pytest.mark.parametrize("address", ["::1", "::", "2606:4700:4700::1111", "fe80::1", "2001:db8::1"])
def test_plain_ipv6_carries_no_ipv4(address: str) -> None:
    assert embedded_ipv4(ipaddress.IPv6Address(address)) == []


@pytest.mark.parametrize("address", BLOCKED)
def test_allowed_networks_lift_exactly_their_network(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert reason_for(address, allowed_networks=[f"{ip}/{ip.max_prefixlen}"]) is None
    other = "192.0.2.0/24" if ip.version == 4 else "2001:db8::/32"
    assert reason_for(address, allowed_networks=[other]) is not None


def test_allowed_networks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLQ_ALLOWED_NETWORKS", "127.0.0.2/32, 10.1.0.0/16")
    monkeypatch.delenv("CRAWLQ_ALLOW_PRIVATE", raising=False)
    guard = AddressPolicy(make_settings())
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


# --- the real fetcher, in a network namespace that has only a loopback interface ---------------------------

NAMESPACE_TARGETS = [
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::a00:1]/",
    "http://[::ffff:0:a00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::a00:1]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",
    "http://[2002:a00:1::]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[2001:0:a00:1::f7f7:f7f7]/",
    "http://[2001:0:836b:4179::5601:5601]/",
    "http://[fec0::1]/",
    "http://[fd00:ec2::254]/",
]
#: blocked under allow_private too: the metadata addresses in every form
NAMESPACE_METADATA_TARGETS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[2001:0:836b:4179::5601:5601]/",
    "http://[fd00:ec2::254]/",
]


def namespace_probe_main() -> None:
    """Run inside `unshare -n`: fetch each target with the real Fetcher and print {url: [error, message]}."""
    import asyncio
    import json
    import sys
    import urllib.parse

    from crawlq_local.target import TargetSite
    from workers.fetcher import Fetcher

    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:  # never fetch a non-loopback target where a packet could leave
        sys.exit(f"not a loopback-only network namespace: {interfaces}")

    async def attempts(settings: Settings, urls: list[str]) -> dict[str, list[str | None]]:
        fetcher = Fetcher(settings)
        await fetcher.start()
        try:
            found: dict[str, list[str | None]] = {}
            for url in urls:
                attempt = await fetcher.fetch(url)
                found[url] = [str(attempt.error) if attempt.error else None, attempt.message]
            return found
        finally:
            await fetcher.close()

    async def main() -> dict[str, dict[str, list[str | None]]]:
        loopback: dict[str, Any] = dict(_env_file=None, allowed_networks=LOOPBACK_NETWORKS, fetch_timeout_s=3)
        async with TargetSite("127.0.0.1") as site:
            redirect = site.url("/redirect-to?url=" + urllib.parse.quote("http://[64:ff9b::a9fe:a9fe]/", safe=""))
            return {
                "sanity": await attempts(Settings(**loopback), [site.url("/ok")]),
                "loopback_only": await attempts(Settings(**loopback), [*NAMESPACE_TARGETS, redirect]),
                "allow_private": await attempts(Settings(**loopback, allow_private=True), NAMESPACE_METADATA_TARGETS),
            }

    print(json.dumps(asyncio.run(main())))


def _namespace_unavailable() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs `unshare` (util-linux) and `ip` (iproute2) to make a loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare -n` is not permitted here (needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


@pytest.mark.timeout(60)
def test_the_real_fetcher_blocks_every_form_in_a_loopback_only_namespace() -> None:
    """Only the guard can turn these into `blocked_address`: in a namespace with nothing but `lo`, a guard that let
    one through would get a connection error (no route), and no packet could leave the machine either way."""
    unavailable = _namespace_unavailable()
    if unavailable:
        pytest.skip(unavailable)
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
    script = "from tests.test_addresses import namespace_probe_main; namespace_probe_main()"
    shell = 'ip link set lo up && exec "$0" -c "$1"'
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", shell, sys.executable, script],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["sanity"] == {next(iter(results["sanity"])): [None, None]}, "the fetcher must work on loopback"
    assert len(results["loopback_only"]) == len(NAMESPACE_TARGETS) + 1
    assert list(results["allow_private"]) == NAMESPACE_METADATA_TARGETS
    for run in ("loopback_only", "allow_private"):
        for url, (error, message) in results[run].items():
            assert error == "blocked_address", f"{run}: {url} -> {error}: {message}"
            assert "CRAWLQ_ALLOWED_NETWORKS" in message, message
