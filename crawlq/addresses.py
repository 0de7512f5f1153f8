"""The address policy (SSRF guard): which IP addresses a fetch may connect to, and the aiohttp resolver that
enforces it on every resolution (`GuardedResolver`).

Workers enforce it on every resolution and redirect hop, the producer when it reads sitemaps; the API screens submits
with it (crawlq_api/guard.py) and stamps its own rules on every batch it submits (`AddressRules`, carried
in `crawlq.options.BatchOptions.address_policy`), which the workers then apply instead of their own.

An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4,
Teredo) is judged by the IPv4 addresses it carries as well as by itself. Cloud metadata addresses stay
blocked under `allow_private`; only a network in `allowed_networks` that contains them lets them through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "API_NETWORKS",
    "METADATA_NETWORKS",
    "AddressPolicy",
    "AddressRules",
    "BlockedAddress",
    "GuardedResolver",
    "IPAddress",
    "embedded_ipv4",
    "literal_address",
    "parse_networks",
]

WORKER_NETWORKS = "CRAWLQ_ALLOWED_NETWORKS"
WORKER_PRIVATE = "CRAWLQ_ALLOW_PRIVATE"
API_NETWORKS = "CRAWLQ_API_ALLOWED_NETWORKS"


class Rules(Protocol):
    """What a policy is built from: worker `Settings` or a batch's `AddressRules`."""

    @property
    def allow_private(self) -> bool: ...

    @property
    def allowed_networks(self) -> Sequence[str]: ...


class AddressRules(BaseModel):
    """A batch's own address rules, applied by the workers instead of theirs (the API sets them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_private: bool = False
    allowed_networks: tuple[str, ...] = Field(default=(), max_length=256)  #: CIDRs

    @field_validator("allowed_networks")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network (CIDR): {network[:60]!r}") from exc
        return value


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
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

    def __init__(
        self, rules: Rules, *, networks_setting: str = WORKER_NETWORKS, private_setting: str | None = WORKER_PRIVATE
    ) -> None:
        """:param rules: `allow_private` and `allowed_networks` (worker `Settings`, or a batch's `AddressRules`)
        :param networks_setting: the setting a blocked address's message tells people to extend
        :param private_setting: the setting that allows private addresses, if people can set one"""
        self.allow_private = rules.allow_private
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in rules.allowed_networks]
        self.networks_setting = networks_setting
        if private_setting is None:
            self.how_to_allow = f"add the network to {networks_setting} to allow it"
            self.even = "blocked even where private addresses are allowed"
        else:
            self.how_to_allow = f"set {private_setting}=1 or add the network to {networks_setting} to allow it"
            self.even = f"blocked even with {private_setting}=1"

    @classmethod
    def of_batch(cls, rules: AddressRules) -> AddressPolicy:
        """The policy of a batch submitted through the API (`BatchOptions.address_policy`)."""
        return cls(rules, networks_setting=API_NETWORKS, private_setting=None)

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

    def _hard_reason(self, address: IPAddress) -> str | None:
        """Blocked whatever allow_private says: multicast (never a TCP peer) and cloud metadata."""
        if address.is_multicast:
            return f"{address} is a multicast address (add the network to {self.networks_setting} to allow it)"
        for net in METADATA_NETWORKS:
            if address in net:
                return (
                    f"{address} is a cloud metadata address, {self.even} "
                    f"(add {net} to {self.networks_setting} to allow it)"
                )
        return None

    def _soft_reason(self, address: IPAddress) -> str | None:
        """Blocked unless allow_private: every address that is not public."""
        if self.allow_private:
            return None
        if any(address in net for net in _NOT_PUBLIC) or not address.is_global:
            return f"{address} is not a public address ({self.how_to_allow})"
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


def parse_networks(value: object, example: str = "like 10.0.0.0/8 or fd00::/8") -> object:
    """A settings value of networks: a comma-separated string becomes a list, and every entry must be a CIDR
    (`ValueError` naming the bad one otherwise); any other value is left to the model's own validation."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        for network in value:
            try:
                ipaddress.ip_network(str(network), strict=False)
            except ValueError as exc:
                raise ValueError(f"{network!r} is not a network (CIDR) {example}") from exc
    return value
