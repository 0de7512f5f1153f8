"""The Python API: submit a batch, wait for it, read its stats and results, see the cluster's status.

async with await Client.connect(Settings()) as client:
    report = await client.submit(["https://example.com/"])
    stats = await client.wait(report.batch, timeout_s=60)
    async for result in client.results(report.batch):
        print(result.url, result.status, result.latency_ms)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.client import PubSub

from crawlq import keys
from crawlq.connection import connect, result_of
from crawlq.errors import UnknownBatch
from crawlq.heartbeats import live_workers
from crawlq.models import BatchStats, UrlResult, now_ms
from crawlq.settings import Settings
from crawlq.store import Store
from producer.cluster import HostState, QueueUrls, queue_urls, read_hosts
from producer.submit import SubmitReport, new_batch_id, submit_lines

__all__ = ["Client", "QueueDepth"]


class QueueDepth(dict[str, int]):
    """ready, deferred, in_progress and total jobs in the queue (ready + deferred + in_progress == total)."""


async def _next_message(events: PubSub, timeout_s: float) -> None:
    """Return when a message arrives on `events` or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (left_s := deadline - time.monotonic()) > 0:
        message = await events.get_message(ignore_subscribe_messages=True, timeout=left_s)
        if message is not None:
            return


class Client:
    def __init__(self, redis: ArqRedis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.store = Store(redis, settings)

    @classmethod
    async def connect(cls, settings: Settings) -> Client:
        """Raises `crawlq.errors.RedisUnavailable` (one sentence) when Redis cannot be reached."""
        return cls(await connect(settings), settings)

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def submit(self, urls: Iterable[str], batch: str | None = None) -> SubmitReport:
        """Validate, de-duplicate and enqueue `urls` (invalid ones are reported, not queued); the first
        jobs are enqueued while the rest is still being parsed."""
        lines = urls if isinstance(urls, list | tuple) else list(urls)
        return await submit_lines(self.store, batch or new_batch_id(), lines)

    async def stats(self, batch: str) -> BatchStats:
        return await self.store.stats(batch)

    async def wait(
        self,
        batch: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 0.1,
        on_progress: Callable[[BatchStats], None] | None = None,
    ) -> BatchStats:
        """Wait until the batch is complete; raises TimeoutError, or UnknownBatch if Redis lost it.

        Completion is seen at once (the commit that completes a batch publishes on its events channel);
        `poll_s` only paces progress reads (`on_progress`), and is the fallback should a message be lost."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        async with self.redis.pubsub() as events:
            await events.subscribe(keys.batch_events(batch))  # before the first read: no completion is missed
            while True:
                stats = await self.store.stats(batch)
                if on_progress is not None:
                    on_progress(stats)
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

    async def workers(self) -> list[dict[str, Any]]:
        return await live_workers(self.redis)

    async def recent_batches(self, limit: int = 10) -> list[BatchStats | str]:
        names = await result_of(self.redis.zrevrange(keys.BATCHES, 0, limit - 1))
        out: list[BatchStats | str] = []
        for raw in names:
            try:
                out.append(await self.stats(raw.decode()))
            except UnknownBatch:
                out.append(raw.decode())
        return out

    async def status(self, hosts_shown: int = 10) -> dict[str, Any]:
        """The cluster at a glance: queue depth in URLs and jobs, workers, recent batches, busiest hosts."""
        batches = await self.recent_batches()
        depth = await self.queue_urls()
        hosts = await self.hosts()
        return {
            "queue": {"urls": depth.urls(), "jobs": depth.jobs()},
            "hosts": [host.as_dict() for host in hosts[:hosts_shown]],
            "hosts_total": len(hosts),
            "workers": await self.workers(),
            "batches": [
                b.model_dump() if isinstance(b, BatchStats) else {"batch": b, "state": "unknown"} for b in batches
            ],
            "overall": await self.store.overall(),
        }
