"""Worker heartbeats: each worker refreshes `keys.worker(id)` with a TTL; this reads the live ones."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from crawlq import keys
from crawlq.codec import unpack

__all__ = ["live_workers"]


async def live_workers(redis: Redis) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired, sorted by worker id."""
    found: list[dict[str, Any]] = []
    async for key in redis.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=500):
        raw = await redis.get(key)
        if raw is not None:
            found.append(unpack(raw))
    return sorted(found, key=lambda beat: str(beat.get("id")))
