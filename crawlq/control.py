"""Scheduling between batches from the operator's side: priority, pause, resume, cancel, delete and the list.

Pause and cancel are flags in the batch's meta hash (`paused_at`, `cancelled_at`) that workers read from a
per-worker cache (`workers.control`), refreshed by a message on `keys.CONTROL` and at least every second;
claim.lua skips the jobs of paused batches (`keys.PAUSED`). Cancel then goes through Redis in steps, each one
safe against workers committing at the same time:
1. flag the batch (`cancelled_at`: workers start no new fetch, a submit to it is refused);
2. page through the manifest (HSCAN); `lua/cancel.lua` records `cancelled` for each URL of the page that has
   no result, with its counters (first write wins, as in commit.lua);
3. remove the batch's jobs that are not running (`lua/close_jobs.lua`); a running job's later commits are
   no-ops for URLs already cancelled;
4. drop its submit leases and complete it through commit.lua (finished_at set and completion published once).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from crawlq import keys
from crawlq.codec import pack
from crawlq.connection import result_of
from crawlq.errors import CrawlqError, UnknownBatch
from crawlq.models import BatchStats, ErrorClass, UrlResult, now_ms
from crawlq.stats import Field, counters
from crawlq.store import Store

__all__ = ["BatchControl", "BatchRunning", "ControlOutcome"]

CANCEL_PAGE = 1000  #: manifest entries per HSCAN page (one cancel.lua call each)
CANCEL_MESSAGE = "the batch was cancelled before this URL was fetched"


class BatchRunning(CrawlqError, ValueError):
    """`delete` of a batch that is not complete, without `force`."""


@dataclass(slots=True)
class ControlOutcome:
    batch: str
    changed: bool  #: False: nothing to do (the message says why)
    message: str
    cancelled: int = 0  #: URLs recorded as cancelled


def _script(name: str) -> str:
    return (files("crawlq") / "lua" / name).read_text()


class BatchControl:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis = store.redis
        self._cancel = self.redis.register_script(_script("cancel.lua"))
        self._close_jobs = self.redis.register_script(_script("close_jobs.lua"))

    async def _stats(self, batch: str) -> BatchStats:
        return await self.store.stats(batch)  # raises UnknownBatch

    async def set_priority(self, batch: str, priority: int) -> None:
        """The batch's priority (before its first submit, or while it runs); higher is claimed first."""
        await result_of(self.redis.zadd(keys.SCHED, {batch: priority}))
        if await result_of(self.redis.exists(keys.batch_meta(batch))):
            await result_of(self.redis.hset(keys.batch_meta(batch), Field.PRIORITY, str(priority)))

    async def pause(self, batch: str) -> ControlOutcome:
        stats = await self._stats(batch)
        if stats.complete:
            return ControlOutcome(batch, False, f"batch {batch} is already complete; nothing to pause")
        if stats.paused:
            return ControlOutcome(batch, False, f"batch {batch} is already paused")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.PAUSED, batch)
            pipe.hset(keys.batch_meta(batch), Field.PAUSED_AT, str(now_ms()))
            pipe.publish(keys.CONTROL, batch)
            await pipe.execute()
        return ControlOutcome(batch, True, f"batch {batch} paused: no new fetch starts for it until it is resumed")

    async def resume(self, batch: str) -> ControlOutcome:
        stats = await self._stats(batch)
        if not stats.paused:
            return ControlOutcome(batch, False, f"batch {batch} is not paused")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.PAUSED, batch)
            pipe.hdel(keys.batch_meta(batch), Field.PAUSED_AT)
            pipe.publish(keys.CONTROL, batch)
            pipe.publish(keys.wake(self.store.settings.queue_name), "1")
            await pipe.execute()
        return ControlOutcome(batch, True, f"batch {batch} resumed")

    async def cancel(self, batch: str) -> ControlOutcome:
        """Record every URL not yet done as `cancelled` (exactly once) and complete the batch."""
        stats = await self._stats(batch)
        if stats.complete:
            return ControlOutcome(batch, False, f"batch {batch} is already complete; nothing to cancel")
        meta = keys.batch_meta(batch)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(meta, Field.CANCELLED_AT, str(now_ms()))
            pipe.hdel(meta, Field.PAUSED_AT)
            pipe.srem(keys.PAUSED, batch)
            pipe.zrem(keys.SCHED, batch)
            pipe.publish(keys.CONTROL, batch)
            await pipe.execute()
        cancelled = await self._cancel_open_urls(batch)
        await self._close_queued_jobs(batch)
        await result_of(self.redis.delete(keys.batch_submitters(batch), keys.batch_queue(batch)))
        await self.store.commit(batch)  # completes it (done == total, no submitter left), once
        message = f"batch {batch} cancelled: {cancelled} URLs not yet done were recorded as cancelled"
        return ControlOutcome(batch, True, message, cancelled)

    async def _cancel_open_urls(self, batch: str) -> int:
        record = UrlResult("", False, None, None, 0, 0, ErrorClass.CANCELLED, CANCEL_MESSAGE, "", now_ms())
        counts, _ = counters([record])
        head: list[Any] = [self.store.settings.result_ttl_s, len(counts)]
        for field, by in counts.items():
            head += [field, by]
        script_keys = [keys.batch_meta(batch), keys.batch_results(batch), keys.STATS_ALL]
        cursor, total = 0, 0
        while True:
            cursor, page = await self.redis.hscan(keys.batch_urls(batch), cursor, count=CANCEL_PAGE)
            if page:
                args = list(head)
                for url_id, url in page.items():
                    record.url = record.final_url = url.decode()
                    args += [url_id, pack(record.to_record())]
                added = int(await self._cancel(keys=script_keys, args=args))
                if added == -1:
                    raise UnknownBatch(batch)
                total += max(0, added)
            if cursor == 0:
                return total

    async def _close_queued_jobs(self, batch: str) -> None:
        names = await result_of(self.redis.hkeys(keys.batch_jobs(batch)))
        script_keys = [self.store.settings.queue_name, keys.batch_queue(batch), keys.batch_jobs(batch)]
        for first in range(0, len(names), 1000):
            prefixes = [keys.ARQ_IN_PROGRESS_PREFIX, keys.ARQ_JOB_PREFIX]
            await self._close_jobs(keys=script_keys, args=[*prefixes, *names[first : first + 1000]])

    async def delete(self, batch: str, *, force: bool = False) -> ControlOutcome:
        """Delete the batch's keys; a batch not complete is refused unless `force`, which cancels it first."""
        stats = await self._stats(batch)
        if not stats.complete:
            if not force:
                raise BatchRunning(f"batch {batch} is {stats.state}; cancel it first, or delete with --force")
            await self.cancel(batch)
        batch_keys = [
            keys.batch_meta(batch),
            keys.batch_urls(batch),
            keys.batch_results(batch),
            keys.batch_jobs(batch),
            keys.batch_submitters(batch),
            keys.batch_options(batch),
            keys.batch_queue(batch),
        ]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*batch_keys)
            pipe.zrem(keys.BATCHES, batch)
            pipe.srem(keys.ACTIVE, batch)
            pipe.zrem(keys.SCHED, batch)
            pipe.srem(keys.PAUSED, batch)
            await pipe.execute()
        return ControlOutcome(batch, True, f"batch {batch} deleted")

    async def list(self, offset: int = 0, limit: int = 50) -> tuple[int, list[BatchStats | str]]:
        """Batches newest first, a page of them: (how many there are, the page); a name for one that is gone."""
        total = int(await result_of(self.redis.zcard(keys.BATCHES)))
        names = await result_of(self.redis.zrevrange(keys.BATCHES, offset, offset + limit - 1))
        out: list[BatchStats | str] = []
        for raw in names:
            try:
                out.append(await self.store.stats(raw.decode()))
            except UnknownBatch:
                out.append(raw.decode())
        return total, out
