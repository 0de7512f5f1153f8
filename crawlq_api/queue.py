"""Queue depth in URLs, not jobs: each queued job's open URLs are its row in its batch's job table.

A job id is `{batch}:{random}` (crawlq.jobs.new_job_id) and `crawlq:b:{batch}:jobs` maps it to the
comma-separated ids of the URLs it still owns, so counting URLs costs one HGET per queued job.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from crawlq import keys
from crawlq.connection import result_of
from crawlq.models import now_ms

__all__ = ["QueueUrls", "queue_urls"]

_PAGE = 1000


@dataclass(slots=True)
class QueueUrls:
    ready_jobs: int = 0
    deferred_jobs: int = 0
    in_flight_jobs: int = 0
    ready_urls: int = 0
    deferred_urls: int = 0
    in_flight_urls: int = 0  #: URLs of jobs a worker is running (fetching, or waiting for a host slot)


async def _url_counts(redis: Redis, job_ids: list[str]) -> list[int]:
    counts: list[int] = []
    for start in range(0, len(job_ids), _PAGE):
        page = job_ids[start : start + _PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in page:
                pipe.hget(keys.batch_jobs(job_id.rpartition(":")[0]), job_id)
            rows = await pipe.execute()
        counts += [len(row.split(b",")) if row else 0 for row in rows]
    return counts


async def _running(redis: Redis) -> set[str]:
    prefix = keys.arq_in_progress("")
    return {key.decode().removeprefix(prefix) async for key in redis.scan_iter(match=keys.arq_in_progress("*"))}


async def queue_urls(redis: Redis, queue_name: str) -> QueueUrls:
    """Jobs and URLs in the queue by state: ready (due, not running), deferred (due later), in flight."""
    now = now_ms()
    entries = await result_of(redis.zrange(queue_name, 0, -1, withscores=True))
    running = await _running(redis)
    ids = [raw.decode() for raw, _ in entries]
    counts = await _url_counts(redis, ids)
    depth = QueueUrls()
    for job_id, (_, score), urls in zip(ids, entries, counts, strict=True):
        if job_id in running:
            depth.in_flight_jobs += 1
            depth.in_flight_urls += urls
        elif score <= now:
            depth.ready_jobs += 1
            depth.ready_urls += urls
        else:
            depth.deferred_jobs += 1
            depth.deferred_urls += urls
    return depth
