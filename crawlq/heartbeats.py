"""Worker heartbeats: the `Heartbeat` record, written by each worker (`publish`, refreshed with a TTL under
`keys.worker(id)`) and read back here (`live_workers`) for `crawlq status`, `worker --check`, the API and metrics.

`RateWindow` turns a worker's running count of URLs done into the pages/s over the last minute that its
heartbeat carries (`pages_per_s_1m`), so `crawlq status` and the dashboard need no history of their own.
"""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from redis.asyncio import Redis

from crawlq import keys
from crawlq.codec import pack, unpack

__all__ = ["Heartbeat", "RateWindow", "live_workers", "publish"]


@dataclass(slots=True)
class Heartbeat:
    """What a live worker says about itself (msgpack under `keys.worker(id)`, refreshed every
    `heartbeat_interval_s`). Every field but `id` has a default, so a reader takes a beat with fewer fields."""

    id: str  #: `host:pid:...`, unique per worker process
    host: str = ""  #: the host name the worker runs on (`worker --check` looks for its own)
    started_at: int = 0  #: epoch ms
    seen_at: int = 0  #: epoch ms of this beat
    concurrency: int = 0  #: fetches the worker runs at once at most
    per_host_concurrency: int = 0  #: its default per-host limit
    in_flight: int = 0  #: fetches running now
    pending: int = 0  #: URLs taken and not yet done
    fetches: int = 0  #: fetches started since it started
    urls_done: int = 0  #: URLs done since it started
    pages_per_s_1m: float | None = None  #: URLs done per second over the last minute
    jobs_running: int = 0
    draining: bool = False  #: it is shutting down: it claims nothing new

    def to_record(self) -> dict[str, Any]:
        """The stored (and exported: `crawlq status --json`, the API's /workers) form."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Heartbeat:
        """Read a stored beat; fields this crawlq does not know are ignored."""
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in record.items() if name in known})


async def publish(redis: Redis, beat: Heartbeat, ttl_ms: int) -> None:
    """Write the worker's beat; it lives `ttl_ms` unless written again."""
    await redis.set(keys.worker(beat.id), pack(beat.to_record()), px=ttl_ms)


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


async def live_workers(redis: Redis) -> list[Heartbeat]:
    """Every worker whose heartbeat has not expired, sorted by worker id."""
    found: list[Heartbeat] = []
    async for key in redis.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=500):
        raw = await redis.get(key)
        if raw is not None:
            found.append(Heartbeat.from_record(unpack(raw)))
    return sorted(found, key=lambda beat: beat.id)
