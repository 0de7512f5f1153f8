"""robots.txt: fetched once per origin across the cluster, parsed with protego, cached in Redis with a TTL.

2xx: the rules apply (and Crawl-delay, capped, raises the host's delay). 4xx: everything is allowed.
5xx or no answer from a server that was reached (timeout, connection refused or dropped, a cut-short or
non-HTTP reply): everything is disallowed for a while (`ROBOTS_ERROR_TTL_S`), then asked again. A fetch
that failed for a reason that is not the server's answer (a blocked address, an invalid URL, an unknown
name, TLS, our body cap, a redirect problem, an undecodable body) allows for that same while: the site's
URLs are then fetched, or fail, on their own account rather than as `robots_disallowed`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protego import Protego
from redis.asyncio import Redis

from crawlq import keys
from crawlq.addresses import AddressRules
from crawlq.codec import pack, unpack
from crawlq.models import ErrorClass
from crawlq.settings import Settings
from crawlq.urls import host_of, origin_of
from workers.fetcher import Fetcher, RequestSpec, decode_text
from workers.gate import GateOutcome, HostGate, host_limits

__all__ = ["ROBOTS_ERROR_TTL_S", "SERVER_FAILURES", "RobotsCache", "RobotsMode", "Verdict", "verdict_of"]

ROBOTS_ERROR_TTL_S = 300
#: failures of a server that was reached but gave no usable answer: robots.txt then disallows for a while
SERVER_FAILURES = frozenset({ErrorClass.TIMEOUT, ErrorClass.CONNECT, ErrorClass.TRUNCATED, ErrorClass.PROTOCOL})
LOCK_S = 15
LOCK_POLL_S = (0.01, 0.5)  #: waiting for another worker's fetch of the same robots.txt: first poll, doubling to
_LOCAL_TTL_S = 60.0


class RobotsMode(StrEnum):
    """What a robots.txt verdict says; cached in Redis as its string value."""

    RULES = "rules"  #: the fetched robots.txt decides
    ALLOW = "allow"  #: no robots.txt (4xx) or an unusable fetch: everything is allowed
    DENY = "deny"  #: the server failed (5xx, or unreachable): nothing is allowed for a while


@dataclass(slots=True)
class Verdict:
    mode: RobotsMode
    text: str = ""
    provisional: bool = False  #: from a failed fetch: cached for `ROBOTS_ERROR_TTL_S`, then asked again
    _parser: Any = field(default=None, repr=False)

    def parser(self) -> Any:
        if self._parser is None:
            self._parser = Protego.parse(self.text)
        return self._parser

    def allowed(self, url: str, agent: str) -> bool:
        if self.mode is RobotsMode.ALLOW:
            return True
        if self.mode is RobotsMode.DENY:
            return False
        return bool(self.parser().can_fetch(url, agent))

    def crawl_delay(self, agent: str) -> float | None:
        if self.mode is not RobotsMode.RULES:
            return None
        delay = self.parser().crawl_delay(agent)
        return float(delay) if delay is not None else None


class RobotsCache:
    def __init__(self, redis: Redis, settings: Settings, fetcher: Fetcher, gate: HostGate | None = None) -> None:
        """:param gate: when given, the robots.txt request takes a slot of the host gate like any other."""
        self.redis = redis
        self.settings = settings
        self.fetcher = fetcher
        self.gate = gate
        self.agent = settings.user_agent.split("/")[0].split()[0] or "crawlq"
        self._local: dict[str, tuple[Verdict, float]] = {}
        self._pending: dict[str, asyncio.Future[Verdict]] = {}

    async def verdict(self, url: str, rules: AddressRules | None = None) -> Verdict:
        """:param rules: the batch's address rules: robots.txt is fetched under them, like its pages"""
        origin = origin_of(url)
        cached = self._local.get(origin)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        pending = self._pending.get(origin)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[origin] = future
        try:
            verdict = await self._load(origin, rules)
            self._local[origin] = (verdict, time.monotonic() + _LOCAL_TTL_S)
            future.set_result(verdict)
            return verdict
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._pending[origin]

    async def _load(self, origin: str, rules: AddressRules | None) -> Verdict:
        deadline = time.monotonic() + LOCK_S
        poll_s = LOCK_POLL_S[0]
        while True:
            stored = await self.redis.get(keys.robots(origin))
            if stored is not None:
                raw = unpack(stored)
                return Verdict(RobotsMode(raw["m"]), raw.get("x", ""))
            got_lock = await self.redis.set(keys.robots_lock(origin), b"1", nx=True, ex=LOCK_S)
            if got_lock or time.monotonic() > deadline:
                try:
                    verdict = await self._fetch(origin, rules)
                    ttl = ROBOTS_ERROR_TTL_S if verdict.provisional else self.settings.robots_ttl_s
                    await self.redis.set(
                        keys.robots(origin), pack({"m": verdict.mode.value, "x": verdict.text}), ex=ttl
                    )
                finally:
                    if got_lock:
                        await self.redis.delete(keys.robots_lock(origin))
                return verdict
            await asyncio.sleep(poll_s)  # another worker fetches it: most answer within a few ms
            poll_s = min(LOCK_POLL_S[1], poll_s * 2)

    async def _fetch(self, origin: str, rules: AddressRules | None) -> Verdict:
        url = f"{origin}/robots.txt"
        request = RequestSpec(address_rules=rules)
        if self.gate is None:
            attempt = await self.fetcher.fetch(url, keep_body=True, content=False, request=request)
        else:
            host = host_of(url)
            limit, delay_s = host_limits(self.settings, host)
            lease = None
            while lease is None:  # no deadline: only a draining worker gets no lease
                lease = (await self.gate.acquire(host, limit, delay_s)).lease
                if lease is None:
                    await asyncio.sleep(0.1)
            attempt = await self.fetcher.fetch(url, keep_body=True, content=False, request=request)
            self.gate.release(host, lease, GateOutcome.OK if attempt.ok else GateOutcome.OTHER)
        return verdict_of(attempt.status, attempt.error, attempt.body, attempt.charset)


def verdict_of(status: int | None, error: ErrorClass | None, body: bytes, charset: str | None) -> Verdict:
    """The verdict for one robots.txt fetch's outcome (see the module docstring)."""
    if error is None and status is not None and 200 <= status < 300:
        return Verdict(RobotsMode.RULES, decode_text(body[: 512 * 1024], charset))
    if error is ErrorClass.HTTP_STATUS and status is not None and 400 <= status < 500:
        return Verdict(RobotsMode.ALLOW)
    if (error is ErrorClass.HTTP_STATUS and status is not None and status >= 500) or error in SERVER_FAILURES:
        return Verdict(RobotsMode.DENY, provisional=True)
    return Verdict(RobotsMode.ALLOW, provisional=True)
