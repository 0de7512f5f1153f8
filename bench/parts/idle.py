"""Part 7 (target 6), idle cost: one idle worker's Redis commands per second (`INFO commandstats` deltas,
the bench's own INFO call removed), then the pick-up latency of 1-URL batches (submit start to batch
complete, polled every 5 ms), each submitted after a random idle pause of 1.0-1.5 s."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time

from bench.cluster import commandstats, crawlq_settings, own_server, running_cluster
from bench.context import Bench, PartRound
from bench.procs import CpuMeter, cpu_ms_per_page
from bench.workload import fast_urls, run_tag

__all__ = ["run"]

SETTLE_S = 1.0  #: after the warm-up, before watching: the worker switches to its idle poll


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    base = bench.target.base
    settings = crawlq_settings(10, 1)
    async with (
        own_server() as server,
        running_cluster(settings, 1, server, bench.log_dir("idle"), fast_urls(base, 20, run_tag())) as cluster,
    ):
        redis = cluster.client.redis
        groups = {"workers": [cluster.processes[0].pid], "redis": [server.pid or 0], "producer": [os.getpid()]}
        await asyncio.sleep(SETTLE_S)
        idle_meter = CpuMeter(groups).start()
        before = await commandstats(redis)
        started = time.perf_counter()
        await asyncio.sleep(bench.profile.idle_s)
        after = await commandstats(redis)
        elapsed = time.perf_counter() - started
        idle_cpu = idle_meter.stop()
        delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
        delta["info"] = delta.get("info", 0) - 1  # the first INFO is counted in the second reading
        delta = {name: calls for name, calls in sorted(delta.items(), key=lambda item: -item[1]) if calls > 0}
        pickups = []
        rng = random.Random(7)
        pickup_meter = CpuMeter(groups).start()
        for _ in range(bench.profile.pickup_trials):
            await asyncio.sleep(1.0 + 0.5 * rng.random())
            begin = time.perf_counter()
            report = await cluster.client.submit(fast_urls(base, 1, run_tag()))
            await cluster.client.wait(report.batch, timeout_s=30, poll_s=0.005)
            pickups.append(time.perf_counter() - begin)
        pickup_cpu = pickup_meter.stop()
    commands_per_s = sum(delta.values()) / elapsed
    part.rows.append(
        {
            "mode": "crawlq 1 idle worker",
            "idle_s": round(elapsed, 2),
            "commands_per_s": round(commands_per_s, 2),
            "pickup_median_s": round(statistics.median(pickups), 3),
            "pickup_max_s": round(max(pickups), 3),
            "trials": len(pickups),
            "idle_worker_cpu_pct_of_core": round(100 * idle_cpu["workers"] / elapsed, 2),
            "idle_redis_cpu_pct_of_core": round(100 * idle_cpu["redis"] / elapsed, 2),
            **cpu_ms_per_page(pickup_cpu, len(pickups)),  # 1-URL batches, idle pauses included
        }
    )
    part.figures["idle worker cpu % of a core"] = part.rows[0]["idle_worker_cpu_pct_of_core"]
    part.detail["idle_commands"] = delta
    part.detail["pickups_s"] = [round(value, 4) for value in pickups]
    part.figures["idle commands/s"] = round(commands_per_s, 2)
    part.figures["pickup median_s"] = part.rows[0]["pickup_median_s"]
    part.figures["pickup max_s"] = part.rows[0]["pickup_max_s"]
    return part
