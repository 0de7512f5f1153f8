"""Part `priority` (issue 11, "Scheduling between batches"): a high-priority batch submitted while a large
low-priority batch runs, and two batches of equal priority submitted together.

The user shape: a cluster busy with a long crawl when an urgent batch arrives, and two users' batches at once.
The load is latency-bound and spread over many hosts (`bench.hosts_target`, `HOSTS` loopback hosts,
/page?ms=200, URLs round-robin over all hosts), so that host limits permit every batch the workers' full
speed: the default 2 per host gives 2 x HOSTS = 500 host slots against 2 workers x concurrency 100 = 200
worker slots, so the workers, not the hosts, bound each batch, and no batch's host is full because of the
other's. The robots.txt of every host is fetched by an untimed warm-up batch.

1. The high-priority batch (`priority_high_urls`) alone: its pages/s (submit start to batch complete).
2. The low-priority batch (`priority_low_urls`; 100,000 in the full profile) is submitted, and once its
   fetches have filled the workers the same-sized high-priority batch (`Client.submit(..., priority=10)`) is
   submitted: its first fetch (submit start to the first fetch start, from the stored results' fetched_at
   minus latency_ms, as the latency part measures first_fetch_s) and its pages/s against step 1. The low
   batch is then cancelled (it is not run to its end: only its running matters here).
3. Two batches of `priority_high_urls` each, equal priority, submitted together (concurrently): over the
   common window (the later first fetch start to the earlier last fetch end) each batch's share of the pages
   finished, as a multiple of an even share (1.0 = exactly half each).
"""

from __future__ import annotations

import asyncio
import time

from bench.cluster import FetchSpan, batch_phases, fetch_spans, own_server, running_cluster, timed_batch
from bench.context import Bench, PartRound
from bench.hosts_target import urls_round_robin
from bench.parts.manyhosts import hosts_target, manyhosts_settings
from bench.workload import run_tag
from crawlq_local.cluster import LocalCluster

__all__ = ["run"]

WORKERS = 2
CONCURRENCY = 100
HOSTS = 250
DELAY_MS = 200
HIGH_PRIORITY = 10
SETTINGS_NOTE = (
    f"crawlq: {WORKERS} workers x concurrency {CONCURRENCY}, default politeness (2 per host), {HOSTS} hosts "
    f"(/page?ms={DELAY_MS}, URLs round-robin over all hosts), high priority {HIGH_PRIORITY}, low 0"
)


def _urls(port: int, count: int) -> list[str]:
    return urls_round_robin(port, HOSTS, count, run_tag(), query=f"ms={DELAY_MS}&")


async def _wait_running(cluster: LocalCluster, batch: str, done: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (await cluster.client.stats(batch)).done < done:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the low-priority batch did not reach {done} pages within {timeout_s:g} s")
        await asyncio.sleep(0.05)


def even_share_ratios(first: list[FetchSpan], second: list[FetchSpan]) -> tuple[float, float, float]:
    """Each batch's pages finished in the common window as a multiple of an even share, and the window (s)."""
    start = max(min(span.start_s for span in first), min(span.start_s for span in second))
    end = min(max(span.end_s for span in first), max(span.end_s for span in second))
    counts = [sum(1 for span in spans if start <= span.end_s <= end) for spans in (first, second)]
    total = sum(counts) or 1
    return counts[0] / total / 0.5, counts[1] / total / 0.5, end - start


async def _fair_pair(cluster: LocalCluster, port: int, count: int) -> tuple[float, float, float]:
    reports = await asyncio.gather(*(cluster.client.submit(_urls(port, count)) for _ in range(2)))
    for report in reports:
        await cluster.client.wait(report.batch, timeout_s=600, poll_s=0.25)
    spans = [await fetch_spans(cluster, report.batch) for report in reports]
    return even_share_ratios(spans[0], spans[1])


async def run(bench: Bench) -> PartRound:
    high, low = bench.profile.priority_high_urls, bench.profile.priority_low_urls
    part = PartRound(detail={"settings": SETTINGS_NOTE})
    async with hosts_target(HOSTS) as (port, target_pid), own_server() as server:
        warmup = urls_round_robin(port, HOSTS, HOSTS, run_tag())
        groups = {"redis": [server.pid or 0], "target": [target_pid]}
        async with running_cluster(manyhosts_settings(), WORKERS, server, bench.log_dir("priority"), warmup) as cluster:
            alone = await timed_batch(cluster, _urls(port, high), groups)
            background = await cluster.client.submit(_urls(port, low))
            await _wait_running(cluster, background.batch, 2 * WORKERS * CONCURRENCY)
            low_before = (await cluster.client.stats(background.batch)).done
            urgent = await timed_batch(cluster, _urls(port, high), groups, priority=HIGH_PRIORITY)
            low_during = (await cluster.client.stats(background.batch)).done - low_before
            phases = await batch_phases(cluster, urgent)
            await cluster.client.cancel(background.batch)
            await cluster.client.wait(background.batch, timeout_s=120, poll_s=0.25)
            first_share, second_share, window_s = await _fair_pair(cluster, port, high)
    part.rows.append(
        {
            "mode": "high-priority batch alone",
            "urls": high,
            "wall_s": round(alone.wall_s, 3),
            "pages_per_s": round(alone.pages_per_s, 1),
        }
    )
    part.rows.append(
        {
            "mode": f"high-priority batch, {low:,}-URL low batch running",
            "urls": high,
            "wall_s": round(urgent.wall_s, 3),
            "pages_per_s": round(urgent.pages_per_s, 1),
            "low_pages_meanwhile": low_during,
            **phases,
        }
    )
    part.rows.append(
        {
            "mode": "two equal-priority batches together",
            "urls": 2 * high,
            "common_window_s": round(window_s, 3),
            "share_first": round(first_share, 3),
            "share_second": round(second_share, 3),
        }
    )
    part.figures["high first_fetch_s"] = phases["first_fetch_s"]
    part.figures["high pages/s, low running / alone"] = round(urgent.pages_per_s / alone.pages_per_s, 3)
    part.figures["high pages/s alone"] = round(alone.pages_per_s, 1)
    part.figures["equal priority: lower share / even"] = round(min(first_share, second_share), 3)
    part.figures["equal priority: higher share / even"] = round(max(first_share, second_share), 3)
    return part
