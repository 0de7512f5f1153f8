"""Part 6 (target 5), memory: one worker (concurrency 100) crawls many /fast URLs while its RSS (VmRSS) is
sampled every 0.5 s; Redis memory per stored result from `INFO memory` (used_memory after completion
minus before submit, divided by N) and from `MEMORY USAGE` of the batch's hashes."""

from __future__ import annotations

import asyncio
import statistics
import time

from redis.asyncio import Redis

from bench.cluster import crawlq_settings, own_server, running_cluster, used_memory
from bench.context import Bench, PartRound
from bench.procs import rss_bytes
from bench.workload import fast_urls, run_tag
from crawlq import keys

__all__ = ["run"]

CONCURRENCY = 100
SAMPLE_S = 0.5
MIB = 1024 * 1024


async def _sample(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append((time.monotonic(), rss_bytes(pid)))
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except TimeoutError:
            pass


async def _key_bytes(redis: Redis, batch: str) -> dict[str, int]:
    names = {"results": keys.batch_results(batch), "urls": keys.batch_urls(batch), "meta": keys.batch_meta(batch)}
    names["jobs"] = keys.batch_jobs(batch)
    return {part: int(await redis.memory_usage(name, samples=0) or 0) for part, name in names.items()}


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    count = bench.profile.memory_urls
    base = bench.target.base
    settings = crawlq_settings(CONCURRENCY, 1)
    urls = fast_urls(base, count, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, 1, server, bench.log_dir("memory"), fast_urls(base, 200, run_tag())) as cluster,
    ):
        pid = cluster.processes[0].pid
        redis = cluster.client.redis
        before = await used_memory(redis)
        idle_rss = rss_bytes(pid)
        samples: list[tuple[float, int]] = []
        stop = asyncio.Event()
        started = time.perf_counter()
        report = await cluster.client.submit(urls)
        sampler = asyncio.create_task(_sample(pid, samples, stop))
        stats = await cluster.client.wait(report.batch, timeout_s=1800, poll_s=0.05)
        wall = time.perf_counter() - started
        stop.set()
        await sampler
        after = await used_memory(redis)
        key_bytes = await _key_bytes(redis, report.batch)
    if stats.succeeded != count:
        raise RuntimeError(f"memory run: {stats.succeeded} of {count} succeeded")
    rss = [value for _, value in samples if value]
    half = max(1, len(rss) // 2)
    first, second = statistics.fmean(rss[:half]), statistics.fmean(rss[half:] or rss[:half])
    row = {
        "mode": f"crawlq 1 worker x {CONCURRENCY}",
        "urls": count,
        "wall_s": round(wall, 3),
        "samples": len(rss),
        "idle_rss_mb": round(idle_rss / MIB, 1),
        "max_rss_mb": round(max(rss) / MIB, 1),
        "first_half_mb": round(first / MIB, 1),
        "second_half_mb": round(second / MIB, 1),
        "second/first": round(second / first, 4),
        "redis_bytes_per_result": round((after - before) / count, 1),
        **{f"{name}_bytes_per_url": round(value / count, 1) for name, value in key_bytes.items()},
    }
    part.rows.append(row)
    part.detail["rss_samples_mb"] = [round(value / MIB, 2) for value in rss]
    part.detail["used_memory"] = {"before": before, "after": after}
    for name in ("max_rss_mb", "second/first", "redis_bytes_per_result", "results_bytes_per_url", "urls_bytes_per_url"):
        part.figures[name] = row[name]
    return part
