"""Redis memory: the eviction-policy check at connect, and naming an out-of-memory reply.

crawlq keeps every URL of a batch in Redis until its result is recorded, so a Redis that evicts keys
(any `maxmemory-policy` but `noeviction`) loses URLs silently. Producers and workers refuse such a
Redis at connect with one sentence (BullMQ does the same), unless `CRAWLQ_ALLOW_EVICTION=1`.
A full Redis under `noeviction` refuses writes with an OOM reply instead: that is named with the
figures of `INFO memory`, and workers wait for memory rather than fail.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

from crawlq.connection import describe
from crawlq.errors import EvictingRedis
from crawlq.settings import Settings

__all__ = ["check_eviction_policy", "eviction_policy", "is_out_of_memory", "out_of_memory_message"]

logger = logging.getLogger("crawlq")


async def _info_memory(redis: Redis) -> dict[str, object]:
    info: dict[str, object] = await redis.info("memory")
    return info


async def eviction_policy(redis: Redis) -> str | None:
    """`maxmemory-policy` from CONFIG GET, else from INFO memory (CONFIG may be renamed or disabled), else None."""
    try:
        reply = await redis.config_get("maxmemory-policy")
        for name, value in reply.items():
            if (name.decode() if isinstance(name, bytes) else name) == "maxmemory-policy":
                return value.decode() if isinstance(value, bytes) else str(value)
    except ResponseError:
        pass
    try:
        value = (await _info_memory(redis)).get("maxmemory_policy")
    except ResponseError:
        return None
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_eviction_policy(redis: Redis, settings: Settings) -> None:
    """Raise `EvictingRedis` (one sentence saying what to set) unless Redis runs `noeviction`; with
    `allow_eviction` that is a warning, and so is a policy that cannot be read."""
    where = describe(settings.redis_url)
    policy = await eviction_policy(redis)
    if policy is None:
        logger.warning(
            "cannot read maxmemory-policy of Redis at %s (CONFIG and INFO refused); make sure it is "
            "noeviction, or crawlq may lose URLs",
            where,
        )
        return
    if policy == "noeviction":
        return
    if settings.allow_eviction:
        logger.warning(
            "Redis at %s evicts keys (maxmemory-policy %s); going on because CRAWLQ_ALLOW_EVICTION is "
            "set: URLs may be lost",
            where,
            policy,
        )
        return
    raise EvictingRedis(
        f"Redis at {where} evicts keys (maxmemory-policy {policy}): crawlq would lose URLs; set "
        "`maxmemory-policy noeviction`, or CRAWLQ_ALLOW_EVICTION=1 to go on anyway"
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """True for Redis's OOM reply (also when it comes from inside a Lua script)."""
    return isinstance(exc, OutOfMemoryError) or (isinstance(exc, ResponseError) and str(exc).startswith("OOM"))


async def out_of_memory_message(redis: Redis, where: str) -> str:
    """'Redis at X is out of memory: maxmemory N bytes, used M', with figures from INFO memory if it answers."""
    try:
        info = await _info_memory(redis)
        figures = f"maxmemory {info.get('maxmemory')} bytes, used {info.get('used_memory')}"
    except (RedisError, OSError):
        figures = "INFO memory did not answer"
    return f"Redis at {where} is out of memory: {figures}"
