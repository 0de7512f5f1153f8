"""The per-process URL engine: robots, the host gate, the global fetch semaphore, and the retry decision.

`Engine.process(entry)` takes one URL through one or more attempts and returns either a final
`UrlResult` or a `Deferral` (a retry after backoff, a long host wait, a hand-back at shutdown). It waits
for a busy host in the gate (no slot of the global semaphore held, no Redis traffic), and hands the URL
back when the wait would outlast the job's deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

from crawlq.jobs import Deferral, Entry
from crawlq.models import ErrorClass, UrlResult, now_ms
from crawlq.settings import HostRule, Settings
from crawlq.urls import host_of
from workers.fetcher import NO_REQUEST, Attempt, Fetcher, RequestSpec
from workers.gate import GateOutcome, HostGate, host_limits
from workers.metrics import WorkerMetrics
from workers.retry import decide
from workers.robots import RobotsCache

__all__ = ["Engine", "Outcome"]

Outcome = UrlResult | Deferral
THROTTLE_STATUSES = frozenset({429, 503})
ASK_S = 0.05  #: a URL of a host with a delay holds a fetch slot while it asks; a known wait lets the slot go


class Engine:
    def __init__(self, settings: Settings, fetcher: Fetcher, gate: HostGate, robots: RobotsCache) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.gate = gate
        self.robots = robots
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.rng = random.Random()
        self.draining = asyncio.Event()
        self.in_flight = 0
        self.pending = 0  #: URLs accepted by running jobs and not finished
        self.fetches = 0
        self.resting = 0  #: URLs of hosts with a delay waiting it out (no fetch slot could serve them now)
        self.describing = 0  #: fetched pages waiting to be described (see `Extractor`): they need no fetch slot
        self._limit_cache: dict[tuple[str, float | None], tuple[int, float]] = {}
        self.runtime_rules: tuple[HostRule, ...] = ()  #: host rules set at run time (crawlq.hostrules), first
        self.metrics = WorkerMetrics()
        self.metrics.watch(lambda: self.in_flight)
        self.halted: Callable[[str], bool] = lambda batch: False  #: a paused or cancelled batch: start no fetch
        self.priority_of: Callable[[str], float] = lambda batch: 0.0  #: a batch's priority: first in host queues

    async def process(
        self, entry: Entry, deadline: float, request: RequestSpec = NO_REQUEST, batch: str = ""
    ) -> Outcome:
        """Run `entry` until it has a final result, or hand it back; `deadline` is a monotonic time
        after which no new attempt starts; `request` is what the batch adds to each request. A URL of a
        paused or cancelled batch (`halted`) that has not started fetching is handed back unchanged."""
        host = host_of(entry.url)
        crawl_delay: float | None = None
        if self.settings.robots_enabled:
            verdict = await self.robots.verdict(entry.url, request.address_rules)
            if not verdict.allowed(entry.url, self.robots.agent):
                return _final(entry, None, ErrorClass.ROBOTS_DISALLOWED, "disallowed by robots.txt", entry.attempts)
            crawl_delay = verdict.crawl_delay(self.robots.agent)
        limit, delay_s = self._limits(host, crawl_delay)
        if self.draining.is_set() or time.monotonic() >= deadline or self.halted(batch):
            return Deferral([entry], now_ms())
        if delay_s > 0:
            return await self._process_delayed(entry, host, limit, delay_s, deadline, request, batch)
        priority = self.priority_of(batch)
        grant = await self.gate.acquire(host, limit, delay_s, deadline, priority)  # waits without a fetch slot
        if grant.lease is None:
            return Deferral([entry], now_ms() + int(grant.wait_s * 1000))
        if self.halted(batch):  # paused or cancelled while it waited for the host
            self.gate.release(host, grant.lease, GateOutcome.OTHER)
            return Deferral([entry], now_ms())
        async with self.slots:
            attempt = await self._fetch(entry.url, host, grant.lease, request)
        return self._after(entry, await self._finish(attempt))

    async def _process_delayed(
        self,
        entry: Entry,
        host: str,
        limit: int,
        delay_s: float,
        deadline: float,
        request: RequestSpec,
        batch: str,
    ) -> Outcome:
        """A host with a delay: Redis times the next start from each grant, so the request must start as
        soon as it is granted. The URL waits out the host's known delay without a fetch slot, then asks
        for a lease holding one (a short wait: a grant, or the time to wait again)."""
        while True:
            wait_s = self.gate.known_wait(host)
            if wait_s > 0:
                if time.monotonic() + wait_s > deadline:
                    return Deferral([entry], now_ms() + int(wait_s * 1000))
                self.resting += 1
                try:
                    await asyncio.sleep(wait_s)
                finally:
                    self.resting -= 1
            if self.draining.is_set() or self.halted(batch):
                return Deferral([entry], now_ms())
            attempt = None
            async with self.slots:
                asked_until = min(deadline, time.monotonic() + ASK_S)
                grant = await self.gate.acquire(host, limit, delay_s, asked_until)
                if grant.lease is not None:
                    attempt = await self._fetch(entry.url, host, grant.lease, request)
            if attempt is not None:
                return self._after(entry, await self._finish(attempt))
            if time.monotonic() >= deadline:
                return Deferral([entry], now_ms() + int(grant.wait_s * 1000))

    def stalled(self) -> int:
        """URLs held here that a free fetch slot could not serve now (see `HostGate.stalled`): those of
        hosts that are full, cooling or delayed, and fetched pages waiting to be described."""
        return self.gate.stalled() + self.resting + self.describing

    async def _finish(self, attempt: Attempt) -> Attempt:
        """Describe and store a fetched success, its fetch slot and host lease already given back."""
        if attempt.undescribed is None:
            return attempt
        self.describing += 1
        try:
            return await self.fetcher.finish(attempt, urgent=self.in_flight == 0)
        finally:
            self.describing -= 1

    def _limits(self, host: str, crawl_delay: float | None) -> tuple[int, float]:
        key = (host, crawl_delay)
        found = self._limit_cache.get(key)
        if found is None:
            if len(self._limit_cache) > 10_000:
                self._limit_cache.clear()
            found = self._limit_cache[key] = host_limits(self.settings, host, crawl_delay, self.runtime_rules)
        return found

    def set_runtime_rules(self, rules: Sequence[HostRule]) -> None:
        """Apply the run-time host rules from now on (the per-host limits cached so far are forgotten)."""
        if tuple(rules) != self.runtime_rules:
            self.runtime_rules = tuple(rules)
            self._limit_cache.clear()

    async def _fetch(self, url: str, host: str, lease: str, request: RequestSpec) -> Attempt:
        self.in_flight += 1
        attempt: Attempt | None = None
        try:
            attempt = await self.fetcher.fetch(url, request=request, defer=True)
            return attempt
        finally:
            self.in_flight -= 1
            self.fetches += 1
            if attempt is not None:
                error = attempt.error.value if attempt.error is not None else None
                duration_s = attempt.latency_ms / 1000 if attempt.latency_ms is not None else None
                self.metrics.fetched(attempt.status, error, duration_s)
            throttled = attempt is not None and attempt.status in THROTTLE_STATUSES
            ok = attempt is not None and attempt.ok
            outcome = GateOutcome.THROTTLE if throttled else (GateOutcome.OK if ok else GateOutcome.OTHER)
            self.gate.release(host, lease, outcome, attempt.retry_after_s if attempt is not None else None)

    def _after(self, entry: Entry, attempt: Attempt) -> Outcome:
        attempts = entry.attempts + 1
        if attempt.error is None:  # the common case, kept short
            return UrlResult(
                entry.url, True, attempt.status, attempt.latency_ms, attempts, attempt.size, None, None,
                attempt.final_url, attempt.ended_at_ms or now_ms(), attempt.content, False, attempt.links or None,
            )  # fmt: skip
        decision = decide(
            status=attempt.status,
            error=attempt.error,
            retry_after_s=attempt.retry_after_s,
            attempt=attempts,
            settings=self.settings,
            rng=self.rng,
        )
        if decision.retry:
            self.metrics.retried(attempt.status, attempt.error.value)
            retry = Entry(entry.url_id, entry.url, attempts, entry.depth)
            return Deferral([retry], now_ms() + int(decision.delay_s * 1000))
        return UrlResult(
            url=entry.url,
            ok=False,
            status=attempt.status,
            latency_ms=attempt.latency_ms,
            attempts=attempts,
            bytes=attempt.size,
            error=attempt.error,
            message=attempt.message,
            final_url=attempt.final_url,
            fetched_at=attempt.ended_at_ms or now_ms(),
        )


def _final(entry: Entry, status: int | None, error: ErrorClass, message: str, attempts: int) -> UrlResult:
    return UrlResult(entry.url, False, status, None, attempts, 0, error, message, entry.url, now_ms())
