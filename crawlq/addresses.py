"""The SSRF guard: which IP addresses a fetch may connect to, enforced on every resolution and redirect hop.

An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4,
Teredo) is judged by the IPv4 addresses it carries as well as by itself. Cloud metadata addresses stay
blocked under `allow_private`; only a network in `allowed_networks` that contains them lets them through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from crawlq.settings import Settings

__all__ = [
    "METADATA_NETWORKS",
    "AddressPolicy",
    "BlockedAddress",
    "GuardedResolver",
    "embedded_ipv4",
    "literal_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
HOW_TO_ALLOW = "set CRAWLQ_ALLOW_PRIVATE=1 or add the network to CRAWLQ_ALLOWED_NETWORKS to allow it"
#: cloud instance metadata (AWS, GCP, Azure, Oracle; AWS ECS credentials; AWS over IPv6; Alibaba):
#: blocked even under allow_private
METADATA_NETWORKS: list[IPNetwork] = [
    ipaddress.ip_network(net)
    for net in ("169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::254/128", "100.100.100.200/32")
]
#: not public whatever the running Python's `is_global` says (its lists change between patch releases)
_NOT_PUBLIC: list[IPNetwork] = [
    ipaddress.ip_network(net)
    for net in ("100.64.0.0/10", "fec0::/10", "64:ff9b:1::/48")  # CGNAT, deprecated site-local, NAT64 local-use
]
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
#: RFC 6052 prefix lengths a NAT64 local-use prefix (inside a /48) may have, the common /96 first
_NAT64_LOCAL_PREFIXES = (96, 64, 56, 48)
_LOW32 = 0xFFFFFFFF


class BlockedAddress(OSError):
    """Raised by the resolver when every address of a host is blocked; the fetcher records `blocked_address`."""


def literal_address(host: str) -> IPAddress | None:
    """The address of an IP-literal host (`[::1]`, `127.0.0.1`), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _rfc6052_ipv4(address: ipaddress.IPv6Address, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address RFC 6052 embeds after a prefix of `prefix_len` bits (bits 64-71 are skipped)."""
    value = int(address)
    if prefix_len == 96:
        return ipaddress.IPv4Address(value & _LOW32)
    without_u = ((value >> 64) << 56) | (value & ((1 << 56) - 1))  # 120 bits
    return ipaddress.IPv4Address((without_u >> (120 - prefix_len - 32)) & _LOW32)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of its form; [] for a plain IPv6."""
    if address.ipv4_mapped is not None:
        return [("IPv4-mapped", address.ipv4_mapped)]
    if address.sixtofour is not None:
        return [("6to4", address.sixtofour)]
    if address.teredo is not None:
        server, client = address.teredo
        return [("Teredo server", server), ("Teredo client", client)]
    low32 = ipaddress.IPv4Address(int(address) & _LOW32)
    if address in _NAT64:
        return [("NAT64", low32)]
    if address in _NAT64_LOCAL:
        return [(f"NAT64 local-use /{bits}", _rfc6052_ipv4(address, bits)) for bits in _NAT64_LOCAL_PREFIXES]
    if address in _TRANSLATED:
        return [("IPv4-translated", low32)]
    if address in _COMPATIBLE and int(address) > 1:  # `::` and `::1` are IPv6's own unspecified and loopback
        return [("IPv4-compatible", low32)]
    return []


class AddressPolicy:
    """Blocks loopback, private, link-local, site-local, CGNAT, multicast, reserved and metadata addresses by
    default, including when carried inside an IPv6 address."""

    def __init__(self, settings: Settings) -> None:
        self.allow_private = settings.allow_private
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in settings.allowed_networks]

    def blocked_reason(self, address: IPAddress) -> str | None:
        """Why a connection to `address` is refused, with how to allow it; None if it is allowed."""
        if self._allowed(address):
            return None
        if isinstance(address, ipaddress.IPv4Address):
            return self._hard_reason(address) or self._soft_reason(address)
        carried = embedded_ipv4(address)
        if address.ipv4_mapped is not None:  # a connection to it goes to the IPv4 address itself
            reason = self.blocked_reason(address.ipv4_mapped)
            return self._carried_reason(address, carried, lambda _: reason)
        unlisted = [(form, ipv4) for form, ipv4 in carried if not self._allowed(ipv4)]
        if carried and not unlisted:
            return None  # every IPv4 address it carries is in an allowed network
        return (
            self._carried_reason(address, unlisted, self._hard_reason)
            or self._hard_reason(address)
            or self._soft_reason(address)
            or self._carried_reason(address, unlisted, self._soft_reason)
        )

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in net for net in self.allowed)

    @staticmethod
    def _hard_reason(address: IPAddress) -> str | None:
        """Blocked whatever allow_private says: multicast (never a TCP peer) and cloud metadata."""
        if address.is_multicast:
            return f"{address} is a multicast address (add the network to CRAWLQ_ALLOWED_NETWORKS to allow it)"
        for net in METADATA_NETWORKS:
            if address in net:
                return (
                    f"{address} is a cloud metadata address, blocked even with CRAWLQ_ALLOW_PRIVATE=1 "
                    f"(add {net} to CRAWLQ_ALLOWED_NETWORKS to allow it)"
                )
        return None

    def _soft_reason(self, address: IPAddress) -> str | None:
        """Blocked unless allow_private: every address that is not public."""
        if self.allow_private:
            return None
        if any(address in net for net in _NOT_PUBLIC) or not address.is_global:
            return f"{address} is not a public address ({HOW_TO_ALLOW})"
        return None

    @staticmethod
    def _carried_reason(
        address: IPAddress,
        carried: list[tuple[str, ipaddress.IPv4Address]],
        check: Callable[[IPAddress], str | None],
    ) -> str | None:
        for form, ipv4 in carried:
            reason = check(ipv4)
            if reason is not None:
                return f"{address} carries the {form} address {ipv4}: {reason}"
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops blocked addresses, so the address actually connected to is checked."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        resolved = await self.inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for entry in resolved:
            reason = self.policy.blocked_reason(ipaddress.ip_address(entry["host"]))
            if reason is None:
                allowed.append(entry)
            else:
                reasons.append(reason)
        if not allowed:
            raise BlockedAddress(f"{host} resolves only to blocked addresses: {reasons[0]}")
        return allowed

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
