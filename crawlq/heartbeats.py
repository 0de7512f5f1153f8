"""Worker heartbeats: each worker refreshes `keys.worker(id)` with a TTL; this reads the live ones.

`RateWindow` turns a worker's running count of URLs done into the pages/s over the last minute that its
heartbeat carries (`pages_per_s_1m`), so `crawlq status` and the dashboard need no history of their own.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from redis.asyncio import Redis

from crawlq import keys
from crawlq.codec import unpack

__all__ = ["RateWindow", "live_workers"]


class RateWindow:
    """Rate of a growing counter over the last `window_s` seconds, from the samples given to `observe`."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, count: int, at_s: float | None = None) -> float:
        """Record `count` (monotonic clock `at_s`) and return the rate per second over the window so far."""
        now_s = time.monotonic() if at_s is None else at_s
        self._samples.append((now_s, count))
        while len(self._samples) > 2 and self._samples[1][0] <= now_s - self.window_s:
            self._samples.popleft()
        first_s, first = self._samples[0]
        span_s = now_s - first_s
        return round((count - first) / span_s, 3) if span_s > 0 else 0.0


async def live_workers(redis: Redis) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired, sorted by worker id."""
    found: list[dict[str, Any]] = []
    async for key in redis.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=500):
        raw = await redis.get(key)
        if raw is not None:
            found.append(unpack(raw))
    return sorted(found, key=lambda beat: str(beat.get("id")))
