"""Part 9 (issue 9, target 1), slow servers: the real web is latency-bound, and a worker spends most of its
life waiting. One worker (concurrency 1,000, the per-host limit of the target raised to 2,000) gets
`slow_urls` /delay pages that answer after `slow_delay_s`; once they are all in flight at the target, the
worker's CPU over `slow_window_s` is its cost of waiting, as % of one core (target <= 5 %). The batch then
runs to completion, timed from submit start, with CPU per page of the worker, Redis and the producer.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bench.cluster import crawlq_settings, own_server, running_cluster
from bench.context import Bench, PartRound
from bench.procs import CpuMeter, cpu_ms_per_page
from bench.workload import delay_urls, fast_urls, run_tag

__all__ = ["run"]

CONCURRENCY = 1000
IN_FLIGHT_SHARE = 0.95  #: the window starts once this share of the URLs is in flight at the target


async def _in_flight(bench: Bench) -> int:
    stats: dict[str, Any] = await asyncio.to_thread(bench.target.stats)
    return int(stats["in_flight"])


async def _wait_in_flight(bench: Bench, count: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while (seen := await _in_flight(bench)) < IN_FLIGHT_SHARE * count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"slow servers: only {seen} of {count} fetches in flight after {timeout_s:g} s")
        await asyncio.sleep(0.05)
    return seen


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    profile = bench.profile
    count, delay_s, window_s = profile.slow_urls, profile.slow_delay_s, profile.slow_window_s
    base = bench.target.base
    settings = crawlq_settings(CONCURRENCY, 1, fetch_timeout_s=delay_s + 10)  # the slow answers are not timeouts
    warmup = fast_urls(base, 50, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, 1, server, bench.log_dir("slowservers"), warmup) as cluster,
    ):
        groups = {"workers": [cluster.processes[0].pid], "redis": [server.pid or 0], "producer": [os.getpid()]}
        batch_meter = CpuMeter(groups).start()
        started = time.perf_counter()
        report = await cluster.client.submit(delay_urls(base, [int(delay_s * 1000)] * count, run_tag()))
        await _wait_in_flight(bench, count, timeout_s=max(10.0, delay_s - window_s))
        window = CpuMeter(groups).start()
        window_started = time.perf_counter()
        await asyncio.sleep(window_s)
        waiting_cpu = window.stop()
        window_wall_s = time.perf_counter() - window_started
        in_flight_after = await _in_flight(bench)
        stats = await cluster.client.wait(report.batch, timeout_s=delay_s + 120, poll_s=0.25)
        wall_s = time.perf_counter() - started
        batch_cpu = batch_meter.stop()
    if stats.succeeded != count:
        raise RuntimeError(f"slow servers: {stats.succeeded} of {count} succeeded")
    if in_flight_after < IN_FLIGHT_SHARE * count:
        raise RuntimeError(f"slow servers: fetches ended during the window ({in_flight_after} still in flight)")
    share = {group: 100 * seconds / window_wall_s for group, seconds in waiting_cpu.items()}
    part.rows.append(
        {
            "mode": f"crawlq 1 worker x {CONCURRENCY}, {count} fetches of {delay_s:g} s",
            "urls": count,
            "in_flight": in_flight_after,
            "window_s": round(window_wall_s, 2),
            "worker_cpu_pct_of_core": round(share["workers"], 2),
            "redis_cpu_pct_of_core": round(share["redis"], 2),
            "wall_s": round(wall_s, 3),
            **cpu_ms_per_page(batch_cpu, count),
        }
    )
    part.figures["waiting worker cpu % of a core"] = part.rows[0]["worker_cpu_pct_of_core"]
    part.figures["waiting redis cpu % of a core"] = part.rows[0]["redis_cpu_pct_of_core"]
    part.figures["workers cpu_ms/page"] = part.rows[0]["workers_cpu_ms_per_page"]
    part.figures["wall_s"] = part.rows[0]["wall_s"]
    return part
