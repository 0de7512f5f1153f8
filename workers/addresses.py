"""The SSRF guard: which IP addresses a fetch may connect to, enforced on every resolution and redirect hop."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from crawlq.settings import Settings

__all__ = ["AddressPolicy", "BlockedAddress", "GuardedResolver", "literal_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HOW_TO_ALLOW = "set CRAWLQ_ALLOW_PRIVATE=1 or add the network to CRAWLQ_ALLOWED_NETWORKS to allow it"
_ALWAYS_BLOCKED = [ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd00:ec2::254/128")]


class BlockedAddress(OSError):
    """Raised by the resolver when every address of a host is blocked; the fetcher records `blocked_address`."""


def literal_address(host: str) -> IPAddress | None:
    """The address of an IP-literal host (`[::1]`, `127.0.0.1`), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class AddressPolicy:
    """Blocks loopback, private, link-local, CGNAT, multicast, reserved and metadata addresses by default."""

    def __init__(self, settings: Settings) -> None:
        self.allow_private = settings.allow_private
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in settings.allowed_networks]

    def blocked_reason(self, address: IPAddress) -> str | None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allowed):
            return None
        if address.is_multicast:
            return f"{address} is a multicast address (add the network to CRAWLQ_ALLOWED_NETWORKS to allow it)"
        if self.allow_private:
            return None
        if any(address in net for net in _ALWAYS_BLOCKED) or not address.is_global:
            return f"{address} is not a public address ({HOW_TO_ALLOW})"
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
