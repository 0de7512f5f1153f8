"""The per-host politeness gate, shared by every worker through Redis (`workers/lua/gate.lua`).

At most `limit` requests are in flight per host across the cluster (leases in a sorted set that expire
if a worker dies), request starts are at least `delay_s` apart, and 429/503 put the host in a cooldown
that doubles on repeat and halves on success. Requests from all coroutines of a process are coalesced:
whatever is waiting when the flusher runs goes to Redis in one script call.

For hosts with a high limit and no delay (`limit >= POOL_MIN_LIMIT`), a worker asks for a few leases more
than it needs and reuses them locally for at most `POOL_HOLD_S`; then they go back to Redis. Every lease
is still counted in Redis, so the cluster-wide limit holds; a cooldown set by another worker is seen
within `POOL_HOLD_S`, and a 429/503 returns the whole local pool at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import logging
import time
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from crawlq import keys
from crawlq.models import now_ms
from crawlq.settings import Settings

__all__ = ["Grant", "HostGate", "host_limits"]

logger = logging.getLogger("crawlq.gate")
FULL_POLL_S = 0.02  #: how soon to ask again when a host has no free slot (the first waiter; see `_full_wait_s`)
DELAY_MARGIN = 0.1  #: next start after a delay: +10 %, so jitter in sending never makes a gap shorter
POOL_MIN_LIMIT = 8  #: hosts with at least this limit (and no delay) get a local lease pool
POOL_HOLD_S = 1.0  #: how long leases may be reused locally before they go back to Redis


@dataclass(slots=True, frozen=True)
class Grant:
    lease: str | None  #: None: not granted; ask again after `wait_s`
    wait_s: float = 0.0


@dataclass(slots=True)
class _Pool:
    free: list[str]
    expires: float  #: monotonic time after which the pool's leases go back to Redis
    succeeded: bool = False


@dataclass(slots=True)
class _Acquire:
    host: str
    limit: int
    delay_ms: int
    future: asyncio.Future[Grant] = field(repr=False)


def host_limits(settings: Settings, host: str, crawl_delay_s: float | None = None) -> tuple[int, float]:
    """(concurrency, delay_s) for a host: the first matching `host_rules` entry, else the defaults,
    with the delay raised to robots.txt's Crawl-delay (capped)."""
    concurrency, delay = settings.per_host_concurrency, settings.per_host_delay_s
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for rule in settings.host_rules:
        if fnmatch.fnmatch(host, rule.pattern) or fnmatch.fnmatch(bare, rule.pattern):
            concurrency = rule.concurrency or concurrency
            delay = rule.delay_s if rule.delay_s is not None else delay
            break
    if crawl_delay_s:
        delay = max(delay, min(crawl_delay_s, settings.robots_max_crawl_delay_s))
    return concurrency, delay


class HostGate:
    def __init__(self, redis: Redis, settings: Settings, worker_id: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self._script = redis.register_script((files("workers") / "lua" / "gate.lua").read_text())
        self._acquires: list[_Acquire] = []
        self._releases: list[tuple[str, str, str, int]] = []
        self._wake = asyncio.Event()
        self._sequence = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._pools: dict[str, _Pool] = {}
        self._full_turns: dict[str, float] = {}  #: per full host: the monotonic time of the next waiter's turn

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crawlq-gate")

    async def close(self) -> None:
        """Give back the leases this gate holds unused (its pools) and those already released."""
        for host in list(self._pools):
            self._return_pool(host)
        if self._releases:
            with contextlib.suppress(Exception):  # Redis gone: the leases expire on their own
                await self._flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def acquire(self, host: str, limit: int, delay_s: float) -> Grant:
        pool = self._pools.get(host) if delay_s == 0 and limit >= POOL_MIN_LIMIT else None
        if pool is not None and pool.free and time.monotonic() < pool.expires:
            return Grant(pool.free.pop())
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._acquires.append(_Acquire(host, limit, int(delay_s * 1000), future))
        self._wake.set()
        return await future

    def release(self, host: str, lease: str, outcome: str = "other", retry_after_s: float | None = None) -> None:
        """Give a lease back; `outcome` 'throttle' (429/503) starts or extends the host's cooldown."""
        pool = self._pools.get(host)
        if pool is not None:
            if outcome != "throttle" and time.monotonic() < pool.expires:
                pool.free.append(lease)
                pool.succeeded = pool.succeeded or outcome == "ok"
                return
            if outcome == "throttle":
                self._return_pool(host)
        after_s = min(retry_after_s or 0.0, self.settings.retry_after_max_s)
        self._releases.append((host, lease, outcome, int(after_s * 1000)))
        self._wake.set()

    def _return_pool(self, host: str, pool: _Pool | None = None) -> None:
        """Send a pool's free leases back to Redis (all of it, or only if it is still `pool`)."""
        current = self._pools.get(host)
        if current is None or (pool is not None and current is not pool):
            return
        del self._pools[host]
        outcome = "ok" if current.succeeded else "other"
        self._releases.extend((host, lease, outcome, 0) for lease in current.free)
        self._wake.set()

    def _pool_leases(self, host: str, leases: list[str]) -> None:
        pool = self._pools.get(host)
        if pool is None or time.monotonic() >= pool.expires:
            if pool is not None:
                self._return_pool(host)
            pool = self._pools[host] = _Pool([], time.monotonic() + POOL_HOLD_S)
            asyncio.get_running_loop().call_later(POOL_HOLD_S, self._return_pool, host, pool)
        pool.free.extend(leases)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let the coroutines woken in this loop iteration queue their requests
            try:
                await self._flush()
            except Exception:  # Redis trouble: every waiter is told to ask again shortly
                logger.warning("host gate call failed; retrying", exc_info=True)
                await asyncio.sleep(0.2)
                self._wake.set()

    async def _flush(self) -> None:
        acquires, self._acquires = self._acquires, []
        releases, self._releases = self._releases, []
        if not acquires and not releases:
            return
        hosts: dict[str, int] = {}
        script_keys: list[str] = []

        def index(host: str) -> int:
            if host not in hosts:
                hosts[host] = len(hosts) + 1
                script_keys.extend((keys.host_state(host), keys.host_leases(host)))
            return hosts[host]

        grouped: dict[tuple[str, int, int], list[_Acquire]] = {}
        for request in acquires:
            grouped.setdefault((request.host, request.limit, request.delay_ms), []).append(request)
        lease_ttl_ms = int((self.settings.fetch_timeout_s + 5) * 1000)
        args: list[Any] = [now_ms(), lease_ttl_ms, int(self.settings.cooldown_base_s * 1000)]
        args += [int(self.settings.cooldown_max_s * 1000), len(releases), len(grouped)]
        args += [int(self.settings.retry_after_max_s * 1000), DELAY_MARGIN]
        for host, lease, outcome, after_ms in releases:
            args += [index(host), lease, outcome, after_ms]
        prefixes: list[str] = []
        for (host, limit, delay_ms), requests in grouped.items():
            prefix = f"{self.worker_id}:{next(self._sequence)}"
            prefixes.append(prefix)
            extra = min(limit // 4, 64) if delay_ms == 0 and limit >= POOL_MIN_LIMIT else 0
            args += [index(host), len(requests) + extra, limit, delay_ms, prefix]
        try:
            reply = await self._script(keys=script_keys, args=args)
        except BaseException:
            self._releases = releases + self._releases
            for request in acquires:
                if not request.future.done():
                    request.future.set_result(Grant(None, 0.2))
            raise
        self._resolve(list(grouped.values()), prefixes, reply)

    def _full_wait_s(self, host: str, limit: int) -> float:
        """When a full host's waiter asks again: the waiters take turns, `limit` per `FULL_POLL_S`, rather
        than each asking every `FULL_POLL_S` (which, with many URLs behind a slow host, kept a core busy)."""
        now = time.monotonic()
        if len(self._full_turns) > 10_000:
            self._full_turns = {name: turn for name, turn in self._full_turns.items() if turn > now}
        turn = max(now + FULL_POLL_S, self._full_turns.get(host, 0.0))
        self._full_turns[host] = turn + FULL_POLL_S / max(1, limit)
        return turn - now

    def _resolve(self, groups: list[list[_Acquire]], prefixes: list[str], reply: list[Any]) -> None:
        for position, requests in enumerate(groups):
            granted, wait_ms = int(reply[2 * position]), int(reply[2 * position + 1])
            leases = [f"{prefixes[position]}:{number}" for number in range(1, granted + 1)]
            for number, request in enumerate(requests):
                if number < granted and not request.future.done():
                    request.future.set_result(Grant(leases[number]))
                elif number < granted:
                    self.release(request.host, leases[number])
                elif not request.future.done():
                    wait_s = self._full_wait_s(request.host, request.limit) if wait_ms < 0 else wait_ms / 1000
                    request.future.set_result(Grant(None, wait_s))
            if granted > len(requests):
                self._pool_leases(requests[0].host, leases[len(requests) :])
