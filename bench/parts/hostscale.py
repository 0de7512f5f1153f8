"""Part `hostscale` (issue 11, target 7): scale-out on a many-host, latency-bound load, and a worker SIGKILLed
mid-batch.

The user shape: a polite crawl of many slow sites that gets more workers, and loses one. `HOSTS` loopback
hosts (`bench.hosts_target`), /page?ms=100, URLs round-robin over the hosts, default politeness (2 per
host, robots.txt on; every host's robots.txt fetched by an untimed warm-up), concurrency 20 per worker, so
4 workers fill 80 of the 2 x HOSTS = 1,000 host slots: the workers bound the speed, not the hosts. The
concurrency is kept at the one-host scaleout part's 20, so that 4 workers (800 pages/s) stay latency-bound
on a 2-core machine.

Scale-out, weak scaling as in the `scaleout` part: 1 -> 2 -> 4 workers of one cluster (workers added between
runs, each new size settled by a small untimed batch), `hostscale_urls_per_worker` URLs per worker (600 in
the full profile, 200 in smoke), so the ideal time is the same for every size; efficiency = pages/s of n
workers / (n x pages/s of 1).

SIGKILL (full profile only: with the default 15 s lease it takes 15-20 s, too long for the smoke run): with
the 4 workers, a batch of `hostscale_kill_urls` URLs; once a quarter of it is done one worker gets SIGKILL.
Figures: kill to batch complete (the killed worker's claimed jobs wait out their lease, then the others crawl
its hosts), and kill to the last fetch start (from the stored results).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from bench.cluster import fetch_spans, own_server, running_cluster, scale_to, timed_batch
from bench.context import Bench, PartRound
from bench.hosts_target import urls_round_robin
from bench.parts.manyhosts import hosts_target, manyhosts_settings
from bench.procs import cpu_ms_per_page
from bench.workload import run_tag
from crawlq_local.cluster import LocalCluster

__all__ = ["run"]

SIZES = (1, 2, 4)
CONCURRENCY = 20
HOSTS = 500
DELAY_MS = 100


def _urls(port: int, count: int) -> list[str]:
    return urls_round_robin(port, HOSTS, count, run_tag(), query=f"ms={DELAY_MS}&")


async def _kill_mid_batch(cluster: LocalCluster, port: int, count: int) -> dict[str, Any]:
    """SIGKILL the last worker once a quarter of a `count`-URL batch is done; times from the kill."""
    report = await cluster.client.submit(_urls(port, count))
    while (await cluster.client.stats(report.batch)).done < count // 4:
        await asyncio.sleep(0.02)
    victim = cluster.processes[-1]
    victim.send_signal(signal.SIGKILL)
    killed_epoch, killed = time.time(), time.perf_counter()
    done_at_kill = (await cluster.client.stats(report.batch)).done
    stats = await cluster.client.wait(report.batch, timeout_s=300, poll_s=0.1)
    complete_s = time.perf_counter() - killed
    await asyncio.to_thread(victim.wait, 10)
    if stats.succeeded != count:
        raise RuntimeError(f"after the SIGKILL {stats.succeeded} of {count} URLs succeeded")
    last_start = max(span.start_s for span in await fetch_spans(cluster, report.batch))
    return {
        "mode": f"SIGKILL 1 of {len(cluster.processes)} workers mid-batch",
        "urls": count,
        "done_at_kill": done_at_kill,
        "kill_to_complete_s": round(complete_s, 3),
        "kill_to_last_fetch_start_s": round(last_start - killed_epoch, 3),
        "lease_s": cluster.settings.lease_s,
    }


async def run(bench: Bench) -> PartRound:
    per_worker, kill_urls = bench.profile.hostscale_urls_per_worker, bench.profile.hostscale_kill_urls
    part = PartRound(
        detail={
            "settings": f"crawlq: 1/2/4 workers x concurrency {CONCURRENCY}, 2 per host, robots.txt on; "
            f"{HOSTS} hosts, /page?ms={DELAY_MS}, {per_worker} URLs per worker"
        }
    )
    rates: dict[int, float] = {}
    settings = manyhosts_settings(concurrency=CONCURRENCY)
    async with hosts_target(HOSTS) as (port, target_pid), own_server() as server:
        warmup = urls_round_robin(port, HOSTS, HOSTS, run_tag())
        groups = {"redis": [server.pid or 0], "target": [target_pid]}
        async with running_cluster(settings, 1, server, bench.log_dir("hostscale"), warmup) as cluster:
            for workers in SIZES:
                await scale_to(cluster, workers)
                settle = await cluster.client.submit(urls_round_robin(port, HOSTS, 20 * workers, run_tag()))
                await cluster.client.wait(settle.batch, timeout_s=60, poll_s=0.02)
                urls = _urls(port, per_worker * workers)
                batch = await timed_batch(cluster, urls, groups, workers)
                rates[workers] = batch.pages_per_s
                part.rows.append(
                    {
                        "mode": f"crawlq {workers} worker{'s' if workers > 1 else ''} x {CONCURRENCY}",
                        "urls": len(urls),
                        "wall_s": round(batch.wall_s, 3),
                        "ideal_s": round(len(urls) * DELAY_MS / 1000 / (CONCURRENCY * workers), 3),
                        "pages_per_s": round(batch.pages_per_s, 1),
                        "efficiency": round(batch.pages_per_s / rates[1] / workers, 3),
                        **cpu_ms_per_page({g: v for g, v in batch.cpu_s.items() if g != "target"}, len(urls)),
                    }
                )
            if kill_urls:
                part.rows.append(await _kill_mid_batch(cluster, port, kill_urls))
            else:
                part.skipped["SIGKILL"] = "smoke profile: the default 15 s lease makes it too long for CI"
    for row, workers in zip(part.rows, SIZES, strict=False):
        part.figures[f"{workers} workers pages/s"] = row["pages_per_s"]
        if workers > 1:
            part.figures[f"{workers} workers efficiency"] = row["efficiency"]
    if kill_urls:
        part.figures["SIGKILL: kill to batch complete s"] = part.rows[-1]["kill_to_complete_s"]
        part.figures["SIGKILL: kill to last fetch start s"] = part.rows[-1]["kill_to_last_fetch_start_s"]
    return part
