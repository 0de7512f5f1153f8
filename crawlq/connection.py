"""Redis connections: one client per process, with retries and one clear sentence when Redis is unreachable."""

from __future__ import annotations

import os
from collections.abc import Awaitable
from typing import Any, TypeVar

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, ResponseError, TimeoutError

from crawlq.codec import pack, unpack
from crawlq.errors import RedisUnavailable
from crawlq.outage import Outage, WindowRetry, retry_checkouts
from crawlq.settings import Settings

__all__ = ["connect", "describe", "redis_hint", "redis_settings", "result_of"]

T = TypeVar("T")


def describe(url: str) -> str:
    """The Redis address without credentials."""
    settings = RedisSettings.from_dsn(url)
    scheme = "rediss" if settings.ssl else "redis"
    return f"{scheme}://{settings.host}:{settings.port}/{settings.database}"


def redis_hint(settings: Settings) -> str:
    """ "; set CRAWLQ_REDIS_URL" when the Redis address is the default one nobody chose, else ""."""
    if os.environ.get("CRAWLQ_REDIS_URL") or "redis_url" in settings.model_fields_set:
        return ""
    return "; set CRAWLQ_REDIS_URL"


def redis_settings(settings: Settings, *, outage: Outage | None = None) -> RedisSettings:
    """arq's RedisSettings for our URL; with `outage`, commands ride out a Redis outage for
    `redis_retry_window_s` from its first failure (workers)."""
    redis = RedisSettings.from_dsn(settings.redis_url)
    redis.conn_timeout = int(max(1, settings.redis_connect_timeout_s))
    redis.conn_retries = 0
    if outage is not None and settings.redis_retry_window_s > 0:
        redis.retry = WindowRetry(outage)
        redis.retry_on_error = [ConnectionError, TimeoutError, OSError]
    return redis


async def connect(settings: Settings, *, outage: Outage | None = None) -> ArqRedis:
    """An arq pool (a redis-py client) using msgpack; raises RedisUnavailable with one sentence on failure.
    With `outage`, its commands, and taking a connection from its pool, retry within the outage's window."""
    where = describe(settings.redis_url)
    try:
        pool: ArqRedis = await create_pool(
            redis_settings(settings, outage=outage),
            job_serializer=pack,
            job_deserializer=unpack,
            default_queue_name=settings.queue_name,
            retry=0,
        )
        retry_checkouts(pool)
        await pool.ping()
    except AuthenticationError as exc:
        raise RedisUnavailable(f"Redis at {where} refused the credentials: {exc}") from exc
    except ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise RedisUnavailable(f"Redis at {where} refused the credentials: {exc}") from exc
        raise RedisUnavailable(f"Redis at {where} answered with an error: {exc}") from exc
    except (RedisError, OSError) as exc:
        if where.startswith("rediss://") and isinstance(exc, TimeoutError | ConnectionError):
            raise RedisUnavailable(
                f"TLS handshake with Redis at {where} failed or got no answer ({_reason(exc)}); "
                "is that server TLS-enabled, and are its certificates trusted?"
            ) from exc
        raise RedisUnavailable(f"cannot reach Redis at {where} ({_reason(exc)}){redis_hint(settings)}") from exc
    return pool


def _reason(exc: BaseException) -> str:
    text: Any = str(exc) or type(exc).__name__
    if "SSL" in text or "ssl" in text or "TLS" in text:
        return f"TLS failed: {text}"
    return str(text).split("\n")[0]


async def result_of(reply: Awaitable[T] | T) -> T:
    """Await a redis-py asyncio reply (its stubs type replies as `Awaitable[T] | T`)."""
    if isinstance(reply, Awaitable):
        return await reply
    return reply
