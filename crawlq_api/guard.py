"""The API's SSRF guard at submit time: a URL whose host is, or resolves to, a non-public address is
refused unless it lies in `CRAWLQ_API_ALLOWED_NETWORKS`, whatever the workers' own address policy.

Workers check every address they connect to with their own policy (workers/addresses.py); this check
comes first, so that a cluster whose workers allow private addresses still refuses them from the API.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from crawlq.errors import InvalidURL
from crawlq.urls import canonical
from producer.submit import InvalidLine

__all__ = ["SubmitGuard"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HOW_TO_ALLOW = "add its network to CRAWLQ_API_ALLOWED_NETWORKS to allow it"
_ALWAYS_BLOCKED = [ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("fd00:ec2::254/128")]


class SubmitGuard:
    """Screens the lines of a submit; names are resolved concurrently under one deadline."""

    def __init__(self, allowed_networks: Sequence[str], resolve_timeout_s: float) -> None:
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in allowed_networks]
        self.resolve_timeout_s = resolve_timeout_s

    def blocked_reason(self, address: IPAddress) -> str | None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allowed):
            return None
        if address.is_multicast or any(address in net for net in _ALWAYS_BLOCKED) or not address.is_global:
            return f"{address} is not a public address ({HOW_TO_ALLOW})"
        return None

    async def proxy_reason(self, proxy: str) -> str | None:
        """Why a batch may not use this proxy (its host is or resolves to a non-public address), or None."""
        host = urlsplit(proxy).hostname or ""
        return (await self._reasons({host})).get(host) if host else "the proxy URL has no host"

    async def screen(self, lines: Sequence[str]) -> tuple[list[str], list[InvalidLine]]:
        """`lines` with every blocked URL blanked (line numbers stay), and the blocked ones as invalid lines.
        Lines that fail validation are left for the submit to report."""
        hosts: dict[int, str] = {}
        for index, raw in enumerate(lines):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            try:
                host = urlsplit(canonical(text)).hostname
            except (InvalidURL, ValueError):
                continue
            if host:
                hosts[index] = host
        reasons = await self._reasons(set(hosts.values()))
        screened = list(lines)
        blocked: list[InvalidLine] = []
        for index, host in hosts.items():
            reason = reasons.get(host)
            if reason is not None:
                screened[index] = ""
                blocked.append(InvalidLine(index + 1, lines[index].strip()[:200], f"blocked_address: {reason}"))
        return screened, blocked

    async def _reasons(self, hosts: set[str]) -> dict[str, str | None]:
        names = sorted(host for host in hosts if _literal(host) is None)
        reasons: dict[str, str | None] = {}
        for host in hosts - set(names):
            address = _literal(host)
            assert address is not None
            reasons[host] = self.blocked_reason(address)
        if names:
            tasks = [asyncio.ensure_future(self._resolve_reason(name)) for name in names]
            done, pending = await asyncio.wait(tasks, timeout=self.resolve_timeout_s)
            for task in pending:
                task.cancel()
            for name, task in zip(names, tasks, strict=True):
                if task in done:
                    reasons[name] = task.result()
                else:
                    reasons[name] = f"{name} did not resolve within {self.resolve_timeout_s:g} s, so it was not checked"
        return reasons

    async def _resolve_reason(self, host: str) -> str | None:
        """Why `host` is refused: one of its addresses is blocked. A name that does not resolve passes
        (its fetch fails as `dns`, and the workers check whatever it resolves to later)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        for info in infos:
            reason = self.blocked_reason(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
            if reason is not None:
                return f"{host} resolves to {reason}"
        return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
