"""Plain arq as a peer: one job per URL, each job one GET whose result arq stores (`keep_result`).

Worker side, in its own process: `python -m bench.arq_peer --redis-url URL --name N --max-jobs 100`
(arq 0.28 `Worker`, poll_delay 0.01, logging at WARNING, one shared aiohttp session, pickle).
Bench side: `enqueue_fetch_jobs` writes the jobs in arq's own format through one pipeline per 1,000
jobs (the fast path of peer-baselines, faster than `enqueue_job`), and `wait_drained` waits until the
queue is empty (arq removes a job from the queue in the same MULTI that stores its result).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from typing import Any

from arq.constants import default_queue_name, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

__all__ = ["count_results", "enqueue_fetch_jobs", "health_key", "main", "wait_drained"]

JOB_EXPIRES_MS = 86_400_000


def health_key(name: str) -> str:
    return f"bench:arq:health:{name}"


async def fetch(ctx: dict[str, Any], url: str) -> dict[str, Any]:
    started = time.perf_counter()
    async with ctx["session"].get(url) as response:
        body = await response.read()
    return {"s": response.status, "b": len(body), "l": round((time.perf_counter() - started) * 1000, 3)}


async def _startup(ctx: dict[str, Any]) -> None:
    import aiohttp

    ctx["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def _shutdown(ctx: dict[str, Any]) -> None:
    await ctx["session"].close()


async def enqueue_fetch_jobs(redis: Redis, urls: list[str], per_pipeline: int = 1_000) -> None:
    """Enqueue one arq `fetch` job per URL, in arq's job format, one pipeline per `per_pipeline` jobs."""
    for start in range(0, len(urls), per_pipeline):
        now_ms = int(time.time() * 1000)
        async with redis.pipeline(transaction=False) as pipe:
            for url in urls[start : start + per_pipeline]:
                job_id = os.urandom(8).hex()
                pipe.psetex(job_key_prefix + job_id, JOB_EXPIRES_MS, serialize_job("fetch", (url,), {}, None, now_ms))
                pipe.zadd(default_queue_name, {job_id: now_ms})
            await pipe.execute()


async def wait_drained(redis: Redis, poll_s: float = 0.01, timeout_s: float = 600) -> int:
    """Wait until arq's queue is empty; returns how many polls (ZCARD calls) that took."""
    deadline = time.monotonic() + timeout_s
    polls = 0
    while True:
        polls += 1
        if await redis.zcard(default_queue_name) == 0:
            return polls
        if time.monotonic() > deadline:
            raise TimeoutError(f"arq queue not drained after {timeout_s:g} s")
        await asyncio.sleep(poll_s)


async def count_results(redis: Redis) -> tuple[int, int]:
    """(stored results, of them with status 200), read with SCAN and pipelined GETs."""
    import pickle

    names = [name async for name in redis.scan_iter(match=result_key_prefix + "*", count=2000)]
    ok = 0
    for start in range(0, len(names), 2000):
        async with redis.pipeline(transaction=False) as pipe:
            for name in names[start : start + 2000]:
                pipe.get(name)
            for raw in await pipe.execute():
                record = pickle.loads(raw) if raw else {}
                ok += bool(record.get("s")) and record.get("r", {}).get("s") == 200
    return len(names), ok


def main(argv: list[str] | None = None) -> None:
    from arq import Worker
    from arq.connections import RedisSettings
    from arq.worker import func

    parser = argparse.ArgumentParser(prog="python -m bench.arq_peer")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--name", default="0")
    parser.add_argument("--max-jobs", type=int, default=100)
    parser.add_argument("--poll-delay", type=float, default=0.01)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = Worker(
        functions=[func(fetch, name="fetch")],
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        max_jobs=args.max_jobs,
        poll_delay=args.poll_delay,
        on_startup=_startup,
        on_shutdown=_shutdown,
        health_check_key=health_key(args.name),
        log_results=False,
    )
    worker.run()


if __name__ == "__main__":
    main()
