"""The API's SSRF guard at submit time: a URL whose host is, or resolves to, a non-public address is
refused unless it lies in `CRAWLQ_API_ALLOWED_NETWORKS`, whatever the workers' own address policy.

This early answer is a courtesy. The guarantee is that every batch the API submits carries the API's
rules (`BatchOptions.address_policy`, see `rules`), which the workers apply instead of their own to every
connection and redirect hop of that batch, so DNS rebinding and names that resolve only later are
caught at fetch time. Both use the same rules (`crawlq.addresses`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from crawlq.addresses import AddressPolicy, AddressRules, IPAddress, literal_address
from crawlq.errors import InvalidURL
from crawlq.urls import canonical
from producer.submit import InvalidLine

__all__ = ["Lookup", "SubmitGuard", "system_lookup"]

Lookup = Callable[[str], Awaitable[list[str]]]  #: a host name -> its addresses (raises OSError if none)


async def system_lookup(host: str) -> list[str]:
    """The addresses the system resolver gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%")[0] for info in infos]


class SubmitGuard:
    """Screens the lines of a submit; names are resolved concurrently under one deadline."""

    def __init__(
        self, allowed_networks: Sequence[str], resolve_timeout_s: float, lookup: Lookup = system_lookup
    ) -> None:
        #: stamped on every batch the API submits; the workers enforce them at every connection
        self.rules = AddressRules(allow_private=False, allowed_networks=tuple(allowed_networks))
        self.policy = AddressPolicy.of_batch(self.rules)
        self.resolve_timeout_s = resolve_timeout_s
        self.lookup = lookup

    def blocked_reason(self, address: IPAddress) -> str | None:
        return self.policy.blocked_reason(address)

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
        names = sorted(host for host in hosts if literal_address(host) is None)
        reasons: dict[str, str | None] = {}
        for host in hosts - set(names):
            address = literal_address(host)
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
        (its fetch fails as `dns`, or the workers block whatever it resolves to then with the batch's rules)."""
        try:
            addresses = await self.lookup(host)
        except (OSError, UnicodeError):
            return None
        for address in addresses:
            reason = self.blocked_reason(ipaddress.ip_address(address))
            if reason is not None:
                return f"{host} resolves to {reason}"
        return None
