"""Which batches this worker must not start fetches for (paused or cancelled ones), and the priority of each
batch and of the best batch waiting to be claimed, from a local cache.

The engine asks `halted(batch)` before each fetch starts; the answer comes from memory. The cache is read
again at least every `REFRESH_S` (one pipeline: the paused set and the `cancelled_at` flag of the batches
this worker ran lately, their priorities, and the highest priority in `keys.SCHED`), and at once when a pause,
resume or cancel is published on `keys.CONTROL` or a submit wakes the worker.
The same pass reads the run-time host rules (`crawlq.hostrules`) and hands them to `on_rules` (the engine,
which forgets its cached per-host limits when they change).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from crawlq import keys
from crawlq.hostrules import read_rules
from crawlq.settings import HostRule
from crawlq.stats import Field
from workers.events import wait_event

__all__ = ["REFRESH_S", "BatchControl"]

REFRESH_S = 0.5  #: the cache is at most about this old (a pause takes effect within a second)
FORGET_S = 60.0  #: a batch not asked about for this long is no longer read


class BatchControl:
    def __init__(self, redis: Redis, on_rules: Callable[[Sequence[HostRule]], None] | None = None) -> None:
        self.redis = redis
        self.on_rules = on_rules
        self._asked: dict[str, float] = {}  #: batch -> monotonic time it was last asked about
        self._halted: set[str] = set()
        self._priorities: dict[str, float] = {}  #: batch -> priority, as last read
        self.best_queued: float | None = None  #: the highest priority of a batch with jobs to claim, as last read
        self.on_refresh: Callable[[], None] | None = None  #: called after each read (the claim loop may have room)
        self._refresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def halted(self, batch: str) -> bool:
        """Whether the batch is paused or cancelled, as last read."""
        if batch not in self._asked:
            self._refresh.set()  # a batch new to this worker: read it now
        self._asked[batch] = time.monotonic()
        return batch in self._halted

    def priority(self, batch: str) -> float:
        """The batch's priority, as last read (0 until read)."""
        return self._priorities.get(batch, 0.0)

    def poke(self) -> None:
        """A control message came: read again now."""
        self._refresh.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crawlq-batch-control")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await wait_event(self._refresh, REFRESH_S)
            self._refresh.clear()
            with contextlib.suppress(Exception):  # an outage keeps the last answer; the worker logs it elsewhere
                await self.refresh()

    async def refresh(self) -> None:
        now = time.monotonic()
        for batch, asked in list(self._asked.items()):
            if now - asked > FORGET_S:
                del self._asked[batch]
        batches = list(self._asked)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.PAUSED)
            pipe.zrevrange(keys.SCHED, 0, 0, withscores=True)
            for batch in batches:
                pipe.hmget(keys.batch_meta(batch), [Field.CANCELLED_AT, Field.PRIORITY])
            paused, best, *flags = await pipe.execute()
        halted = {raw.decode() for raw in paused}
        halted.update(batch for batch, (cancelled, _) in zip(batches, flags, strict=True) if cancelled)
        self._halted = halted
        self._priorities = {batch: _number(priority) for batch, (_, priority) in zip(batches, flags, strict=True)}
        self.best_queued = float(best[0][1]) if best else None
        if self.on_refresh is not None:
            self.on_refresh()
        if self.on_rules is not None:
            self.on_rules(await read_rules(self.redis))


def _number(raw: bytes | None) -> float:
    try:
        return float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0
