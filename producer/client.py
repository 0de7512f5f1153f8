"""The Python API: submit a batch, wait for it, read its stats and results, see the cluster's status.

async with await Client.connect(Settings()) as client:
    report = await client.submit(["https://example.com/"])
    stats = await client.wait(report.batch, timeout_s=60)
    async for result in client.results(report.batch):
        print(result.url, result.status, result.latency_ms)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sized
from types import TracebackType

from arq.connections import ArqRedis
from redis.asyncio.client import PubSub

from crawlq import keys
from crawlq.connection import connect, describe, result_of
from crawlq.control import BatchControl, ControlOutcome
from crawlq.errors import BatchLost, RedisUnavailable, UnknownBatch
from crawlq.heartbeats import Heartbeat, live_workers
from crawlq.memory import check_eviction_policy
from crawlq.models import BatchStats, UrlResult, now_ms
from crawlq.options import BatchOptions
from crawlq.outage import LOST_CONNECTION, REDIS_DOWN, Outage
from crawlq.settings import Settings
from crawlq.store import Store
from producer.cluster import ClusterStatus, HostState, QueueUrls, per_host_note, queue_urls, read_hosts
from producer.submit import InvalidLine, SubmitReport, new_batch_id, submit_lines

__all__ = ["Client", "QueueDepth"]

OUTAGE_RETRY_S = 0.5  #: while Redis is unreachable, `wait` tries again this often
STRANDED_RECONCILE_PASSES = 3  #: reconciler intervals a batch may have no job queued before `wait` calls it lost


class QueueDepth(dict[str, int]):
    """ready, deferred, in_progress and total jobs in the queue (ready + deferred + in_progress == total)."""


async def _next_message(events: PubSub, timeout_s: float) -> None:
    """Return when a message arrives on `events` or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (left_s := deadline - time.monotonic()) > 0:
        message = await events.get_message(ignore_subscribe_messages=True, timeout=left_s)
        if message is not None:
            return


class _Stranded:
    """`wait`'s watch for a batch none of whose open jobs is queued or running: for a moment that is arq
    giving up on a job before the reconciler resolves it; for `grace_s` it means keys went missing."""

    def __init__(self, store: Store, batch: str, grace_s: float) -> None:
        self.store, self.batch, self.grace_s = store, batch, grace_s
        self.since: float | None = None
        self._next_look = 0.0

    async def check(self, stats: BatchStats) -> None:
        now = time.monotonic()
        if stats.complete or now < self._next_look:
            return
        self._next_look = now + 1.0
        jobs = await self.store.stranded(self.batch)
        if not jobs:
            self.since = None
            return
        self.since = self.since or now
        if now - self.since > self.grace_s:
            reason = f"none of its {jobs} open jobs was queued or running for {now - self.since:.0f} s"
            await self.store.mark_lost(self.batch, reason)
            raise BatchLost(self.batch, reason)


def _silent(line: str) -> None:
    """An outage report that says nothing (a client's start: its failure is the sentence)."""


async def _connect_within(settings: Settings, outage: Outage, start_window_s: float) -> ArqRedis:
    """`connect` with `outage`, tried again for `start_window_s` from now while it fails for want of a
    connection, silently. Each try gives up at its first failure (the outage's window is 0 meanwhile): arq's
    `create_pool` pings on a connection taken from the pool before `retry_checkouts` wraps it, so only a
    whole new try mends a connection dropped while it was greeted."""
    window, report = outage.window_s, outage.report
    outage.window_s, outage.report = 0.0, _silent
    deadline = time.monotonic() + start_window_s
    try:
        while True:
            try:
                return await connect(settings, outage=outage)
            except RedisUnavailable as exc:
                if not isinstance(exc.__cause__, LOST_CONNECTION) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.1)
    finally:
        outage.recovered()  # silent: the start's failures are not an outage of the commands after it
        outage.window_s, outage.report = window, report


class Client:
    def __init__(self, redis: ArqRedis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.store = Store(redis, settings)
        self.control = BatchControl(self.store)

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        check_eviction: bool = True,
        outage: Outage | None = None,
        start_window_s: float | None = None,
    ) -> Client:
        """Raises `crawlq.errors.RedisUnavailable` (one sentence) when Redis cannot be reached, and
        `crawlq.errors.EvictingRedis` when it evicts keys (`check_eviction`; a reader may skip it).
        With `outage` (a long-lived client such as the API's, or `crawlq submit`), commands retry within its
        window. `start_window_s` bounds the retries of the first command instead, counted from when it was
        sent, silently: a dropped connection is mended, but a command run by hand against a stopped Redis
        says so within that time."""
        if outage is None or start_window_s is None:
            redis = await connect(settings, outage=outage)
        else:
            redis = await _connect_within(settings, outage, start_window_s)
        if check_eviction:
            try:
                await check_eviction_policy(redis, settings)
            except BaseException:
                await redis.aclose()
                raise
        return cls(redis, settings)

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def submit(
        self,
        urls: Iterable[str | bytes],
        batch: str | None = None,
        *,
        token: str | None = None,
        expected_count: int | None = None,
        on_invalid: Callable[[InvalidLine], None] | None = None,
        options: BatchOptions | None = None,
        priority: int = 0,
    ) -> SubmitReport:
        """Validate, de-duplicate and enqueue `urls` (invalid ones are reported, not queued); the first
        jobs are enqueued while the rest is still being read. An iterator is read into a list first unless
        `expected_count` is given (then it is read as it goes); see `producer.submit.submit_lines`.

        :param options: headers, cookies, user agent, proxy and re-crawl for every fetch of the batch
            (`crawlq.options.BatchOptions`); a batch keeps the options of its first submit
        :param priority: workers claim the jobs of higher-priority batches first (default 0); batches of
            equal priority share the workers"""
        batch = batch or new_batch_id()
        if priority:
            await self.control.set_priority(batch, priority)
        if expected_count is None and not isinstance(urls, Sized):
            urls = list(urls)
        return await submit_lines(
            self.store,
            batch,
            urls,
            token=token,
            expected_count=expected_count,
            on_invalid=on_invalid,
            options=options,
        )

    async def stats(self, batch: str) -> BatchStats:
        return await self.store.stats(batch)

    async def cancel(self, batch: str) -> ControlOutcome:
        """Record every URL of the batch not yet done as `cancelled` (exactly once) and complete it."""
        return await self.control.cancel(batch)

    async def pause(self, batch: str) -> ControlOutcome:
        """Start no new fetch for the batch (within a second) until `resume`."""
        return await self.control.pause(batch)

    async def resume(self, batch: str) -> ControlOutcome:
        return await self.control.resume(batch)

    async def delete(self, batch: str, *, force: bool = False) -> ControlOutcome:
        """Delete the batch's keys; one not complete is refused (`BatchRunning`) unless `force` cancels it first."""
        return await self.control.delete(batch, force=force)

    async def list_batches(self, offset: int = 0, limit: int = 50) -> tuple[int, list[BatchStats | str]]:
        """A page of batches, newest first, and how many there are (a name only for a batch whose keys are gone)."""
        return await self.control.list(offset, limit)

    async def wait(
        self,
        batch: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 0.1,
        on_progress: Callable[[BatchStats], None] | None = None,
        on_outage: Callable[[str], None] | None = None,
    ) -> BatchStats:
        """Wait until the batch is complete; raises TimeoutError, UnknownBatch if Redis lost it, BatchLost if
        some of its keys went missing, or RedisUnavailable after an outage longer than `redis_retry_window_s`.

        Completion is seen at once (the commit that completes a batch publishes on its events channel);
        `poll_s` only paces progress reads (`on_progress`), and is the fallback should a message be lost.
        A Redis outage is reported through `on_outage` (one line when it starts, one when it ends)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        outage = Outage(describe(self.settings.redis_url), self.settings.redis_retry_window_s, on_outage)
        while True:
            try:
                return await self._wait(batch, deadline, timeout_s, poll_s, on_progress, outage)
            except REDIS_DOWN as exc:
                outage.failed(exc)
                await asyncio.sleep(OUTAGE_RETRY_S)

    async def _wait(
        self,
        batch: str,
        deadline: float | None,
        timeout_s: float | None,
        poll_s: float,
        on_progress: Callable[[BatchStats], None] | None,
        outage: Outage,
    ) -> BatchStats:
        stranded = _Stranded(self.store, batch, STRANDED_RECONCILE_PASSES * self.settings.reconcile_interval_s)
        async with self.redis.pubsub() as events:
            await events.subscribe(keys.batch_events(batch))  # before the first read: no completion is missed
            while True:
                stats = await self.store.stats(batch)
                outage.recovered()
                if on_progress is not None:
                    on_progress(stats)
                if stats.lost_reason is not None:
                    raise BatchLost(batch, stats.lost_reason)
                await stranded.check(stats)
                if stats.complete:
                    return stats
                pause_s = poll_s
                if deadline is not None:
                    left_s = deadline - time.monotonic()
                    if left_s <= 0:
                        message = f"batch {batch} not complete after {timeout_s:g} s ({stats.done}/{stats.total})"
                        raise TimeoutError(message)
                    pause_s = min(pause_s, left_s)
                await _next_message(events, pause_s)

    def results(self, batch: str) -> AsyncIterator[UrlResult]:
        return self.store.iter_results(batch)

    async def queue_depth(self) -> QueueDepth:
        queue = self.settings.queue_name
        now = now_ms()
        due = await self.redis.zcount(queue, "-inf", now)
        deferred = await self.redis.zcount(queue, f"({now}", "+inf")
        running = 0
        async for key in self.redis.scan_iter(match=keys.arq_in_progress("*"), count=1000):
            job_id = key.decode().removeprefix(keys.arq_in_progress(""))
            if await self.redis.zscore(queue, job_id) is not None:
                running += 1
        ready = max(0, due - running)
        return QueueDepth(ready=ready, deferred=deferred, in_progress=running, total=ready + deferred + running)

    async def queue_urls(self) -> QueueUrls:
        """Queue depth in URLs and in jobs, by state (ready, deferred, in flight)."""
        return await queue_urls(self.redis, self.settings.queue_name)

    async def hosts(self) -> list[HostState]:
        """Hosts with politeness state, busiest first."""
        return await read_hosts(self.redis, self.settings)

    async def workers(self) -> list[Heartbeat]:
        return await live_workers(self.redis)

    async def bound_note(self, batch: str) -> str | None:
        """A sentence when per-host limits, not the workers, are what slow the batch now; else None."""
        return await per_host_note(self.redis, self.settings, batch)

    async def recent_batches(self, limit: int = 10) -> list[BatchStats | str]:
        names = await result_of(self.redis.zrevrange(keys.BATCHES, 0, limit - 1))
        out: list[BatchStats | str] = []
        for raw in names:
            try:
                out.append(await self.stats(raw.decode()))
            except UnknownBatch:
                out.append(raw.decode())
        return out

    async def status(self, hosts_shown: int = 10) -> ClusterStatus:
        """The cluster at a glance: queue depth in URLs and jobs, workers, recent batches, busiest hosts."""
        batches = await self.recent_batches()
        depth = await self.queue_urls()
        hosts = await self.hosts()
        running = [b.batch for b in batches if isinstance(b, BatchStats) and b.state == "running"]
        notes = {batch: note for batch in running if (note := await self.bound_note(batch))}
        return ClusterStatus(
            queue=depth,
            workers=await self.workers(),
            batches=batches,
            hosts=hosts[:hosts_shown],
            hosts_total=len(hosts),
            overall=await self.store.overall(),
            notes=notes,
        )
