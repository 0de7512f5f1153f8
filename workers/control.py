"""Which batches this worker must not start fetches for: paused or cancelled ones, from a local cache.

The engine asks `halted(batch)` before each fetch starts; the answer comes from memory. The cache is read
again at least every `REFRESH_S` (one pipeline: the paused set and the `cancelled_at` flag of the batches
this worker ran lately), and at once when a pause, resume or cancel is published on `keys.CONTROL`.
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
        self._refresh = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def halted(self, batch: str) -> bool:
        """Whether the batch is paused or cancelled, as last read."""
        if batch not in self._asked:
            self._refresh.set()  # a batch new to this worker: read it now
        self._asked[batch] = time.monotonic()
        return batch in self._halted

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
            for batch in batches:
                pipe.hexists(keys.batch_meta(batch), Field.CANCELLED_AT)
            paused, *cancelled = await pipe.execute()
        halted = {raw.decode() for raw in paused}
        halted.update(batch for batch, flag in zip(batches, cancelled, strict=True) if flag)
        self._halted = halted
        if self.on_rules is not None:
            self.on_rules(await read_rules(self.redis))
