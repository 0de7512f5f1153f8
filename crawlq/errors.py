"""crawlq's exceptions. HTTP and network outcomes are data (`crawlq.models.ErrorClass`), never exceptions.

* CrawlqError
  + ConfigError              bad settings or arguments
  + RedisUnavailable         Redis cannot be reached, refused our credentials, or TLS failed
  + RedisOutOfMemory         Redis (maxmemory, noeviction) refused a write: it is full
  + EvictingRedis            Redis evicts keys (maxmemory-policy is not noeviction): a runtime failure, exit 1
  + BatchLost                a batch's keys went missing from Redis (evicted, flushed); it can never complete
  + UnknownBatch             no such batch (never submitted, expired, or lost with a Redis restart)
  + InvalidURL (ValueError)  a URL failed validation; carries the reason
  + ServerError              the embedded Redis-protocol server could not start
"""

from __future__ import annotations

__all__ = [
    "BatchLost",
    "ConfigError",
    "CrawlqError",
    "EvictingRedis",
    "InvalidURL",
    "RedisOutOfMemory",
    "RedisUnavailable",
    "ServerError",
    "UnknownBatch",
]


class CrawlqError(Exception):
    """Base of every crawlq exception."""


class ConfigError(CrawlqError):
    pass


class RedisUnavailable(CrawlqError):
    pass


class RedisOutOfMemory(CrawlqError):
    pass


class EvictingRedis(CrawlqError):
    pass


class BatchLost(CrawlqError):
    def __init__(self, batch: str, reason: str) -> None:
        super().__init__(
            f"batch {batch} is lost: {reason}; Redis dropped its keys (evicted or flushed), so it can never "
            f"complete; submit it again to a Redis with maxmemory-policy noeviction"
        )
        self.batch = batch
        self.reason = reason


class UnknownBatch(CrawlqError):
    def __init__(self, batch: str) -> None:
        super().__init__(f"unknown batch {batch!r}: it was never submitted here, its results expired, or Redis lost it")
        self.batch = batch


class InvalidURL(CrawlqError, ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServerError(CrawlqError):
    pass
