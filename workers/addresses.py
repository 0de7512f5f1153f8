"""The SSRF guard at connection time: an aiohttp resolver that drops the addresses the policy blocks, so
the address actually connected to is checked on every resolution and redirect hop. The rules themselves
live in `crawlq.addresses` (shared with the API's submit-time screen).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from crawlq.addresses import METADATA_NETWORKS, AddressPolicy, embedded_ipv4, literal_address

__all__ = [
    "METADATA_NETWORKS",
    "AddressPolicy",
    "BlockedAddress",
    "GuardedResolver",
    "embedded_ipv4",
    "literal_address",
]


class BlockedAddress(OSError):
    """Raised by the resolver when every address of a host is blocked; the fetcher records `blocked_address`."""


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
