"""Part 5 (target 4), scale-out: /delay?ms=100 pages, concurrency 20 per worker, 1 -> 2 -> 4 workers of one
cluster (workers are added between runs). Weak scaling: each run has `scaleout_urls_per_worker` URLs per
worker, so the ideal time is the same for every size; speedup = pages/s of n workers / pages/s of 1."""

from __future__ import annotations

from bench.cluster import crawlq_settings, own_server, running_cluster, scale_to, timed_batch
from bench.context import Bench, PartRound
from bench.procs import cpu_ms_per_page
from bench.workload import delay_urls, fast_urls, run_tag

__all__ = ["run"]

SIZES = (1, 2, 4)
CONCURRENCY = 20
DELAY_MS = 100


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    base = bench.target.base
    per_worker = bench.profile.scaleout_urls_per_worker
    settings = crawlq_settings(CONCURRENCY, max(SIZES))
    warmup = fast_urls(base, 50, run_tag())
    rates: dict[int, float] = {}
    async with (
        own_server() as server,
        running_cluster(settings, 1, server, bench.log_dir("scaleout"), warmup) as cluster,
    ):
        for workers in SIZES:
            await scale_to(cluster, workers)
            settle = await cluster.client.submit(fast_urls(base, 20 * workers, run_tag()))
            await cluster.client.wait(settle.batch, timeout_s=60, poll_s=0.02)
            urls = delay_urls(base, [DELAY_MS] * (per_worker * workers), run_tag())
            groups = {"redis": [server.pid or 0], "target": [bench.target.pid]}
            batch = await timed_batch(cluster, urls, groups, workers)
            rates[workers] = batch.pages_per_s
            ideal = len(urls) * DELAY_MS / 1000 / (CONCURRENCY * workers)
            part.rows.append(
                {
                    "mode": f"crawlq {workers} worker{'s' if workers > 1 else ''} x {CONCURRENCY}",
                    "urls": len(urls),
                    "wall_s": round(batch.wall_s, 3),
                    "ideal_s": round(ideal, 3),
                    "pages_per_s": round(batch.pages_per_s, 1),
                    "speedup": round(batch.pages_per_s / rates[1], 3),
                    "efficiency": round(batch.pages_per_s / rates[1] / workers, 3),
                    "cpu_s": batch.cpu_s["workers"],
                    **cpu_ms_per_page({g: v for g, v in batch.cpu_s.items() if g != "target"}, len(urls)),
                }
            )
    for row, workers in zip(part.rows, SIZES, strict=True):
        part.figures[f"{workers} workers pages/s"] = row["pages_per_s"]
        part.figures[f"{workers} workers cpu_ms/page"] = row["workers_cpu_ms_per_page"]
        if workers > 1:
            part.figures[f"{workers} workers efficiency"] = row["efficiency"]
    return part
