"""Part 3 (target 2), latency-bound: /delay pages with U(50,150) ms delays, 2 crawlq workers x 50,
timed from submit start to batch complete, against the ideal sum(delay) / 100. In the same round,
bare aiohttp with Semaphore(10) against its ideal sum(delay) / 10.

CPU per page: the crawlq run's workers, Redis and producer, against bare aiohttp with Semaphore(100) on the
same delays, i.e. the same pages in flight as crawlq's 2 x 50 (issue 9: a waiting loop must cost no more
than the bare loop; target: crawlq workers' CPU per page <= 1.3 x the bare loop's).

The crawlq wall time is split with the stored results: first fetch (submit start to the first fetch start;
the submit call alone is `submit_s`), crawl (first fetch start to last fetch end) and tail (last fetch end
to the batch seen complete); the three add up to the wall time.
"""

from __future__ import annotations

from typing import Any

from bench.cluster import batch_phases, crawlq_settings, own_server, running_cluster, timed_batch
from bench.context import Bench, PartRound
from bench.procs import CpuMeter, cpu_ms_per_page
from bench.workload import delay_urls, delays_ms, fast_urls, greedy_makespan_s, run_tag

__all__ = ["run"]

WORKERS = 2
CONCURRENCY = 50


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    base = bench.target.base
    delays = delays_ms(bench.profile.latency_urls)
    slots = WORKERS * CONCURRENCY
    settings = crawlq_settings(CONCURRENCY, WORKERS)
    warmup = fast_urls(base, 200, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, WORKERS, server, bench.log_dir("latency"), warmup) as cluster,
    ):
        groups = {"redis": [server.pid or 0], "target": [bench.target.pid]}
        batch = await timed_batch(cluster, delay_urls(base, delays, run_tag()), groups)
        phases = await batch_phases(cluster, batch)
    ideal = sum(delays) / 1000 / slots
    part.rows.append(
        {
            "mode": f"crawlq {WORKERS} workers x {CONCURRENCY}",
            "urls": len(delays),
            "wall_s": round(batch.wall_s, 3),
            "ideal_s": round(ideal, 3),
            "greedy_s": round(greedy_makespan_s(delays, slots), 3),
            "wall/ideal": round(batch.wall_s / ideal, 4),
            "cpu_s": batch.cpu_s["workers"],
            **cpu_ms_per_page({g: v for g, v in batch.cpu_s.items() if g != "target"}, len(delays)),
            **phases,
        }
    )
    part.rows.append(await _bare_same_in_flight(bench, delays, slots))
    bare_delays = delays_ms(bench.profile.latency_bare_urls)
    urls = delay_urls(base, bare_delays, run_tag())
    meter = CpuMeter({"target": [bench.target.pid]}).start()
    warm = ["--warmup-url", f"{base}/fast", "--warmup", "10"]
    result = await bench.client("aiohttp", urls, "latency", "--concurrency", "10", *warm)
    meter.stop()
    bare_ideal = sum(bare_delays) / 1000 / 10
    part.rows.append(
        {
            "mode": "bare aiohttp Semaphore(10)",
            "urls": len(bare_delays),
            "wall_s": round(result["wall_s"], 3),
            "ideal_s": round(bare_ideal, 3),
            "greedy_s": round(greedy_makespan_s(bare_delays, 10), 3),
            "wall/ideal": round(result["wall_s"] / bare_ideal, 4),
            "cpu_s": round(result["cpu_s"], 3),
            **cpu_ms_per_page({"client": result["cpu_s"]}, len(bare_delays)),
        }
    )
    crawlq_cpu, bare_cpu = part.rows[0]["workers_cpu_ms_per_page"], part.rows[1]["client_cpu_ms_per_page"]
    part.figures["crawlq workers cpu_ms/page"] = crawlq_cpu
    part.figures["crawlq redis cpu_ms/page"] = part.rows[0]["redis_cpu_ms_per_page"]
    part.figures[f"bare aiohttp Semaphore({slots}) cpu_ms/page"] = bare_cpu
    part.figures["crawlq workers / bare aiohttp cpu/page"] = round(crawlq_cpu / bare_cpu, 3) if bare_cpu else 0.0
    part.figures["crawlq wall/ideal"] = part.rows[0]["wall/ideal"]
    part.figures["crawlq wall_s"] = part.rows[0]["wall_s"]
    part.figures["crawlq first_fetch_s"] = phases["first_fetch_s"]
    part.figures["bare aiohttp Semaphore(10) wall/ideal"] = part.rows[2]["wall/ideal"]
    return part


async def _bare_same_in_flight(bench: Bench, delays: list[int], slots: int) -> dict[str, Any]:
    """Bare aiohttp with `slots` pages in flight (crawlq's workers x concurrency) on the same delays."""
    base = bench.target.base
    warm = ["--warmup-url", f"{base}/fast", "--warmup", str(slots)]
    extra = ["--concurrency", str(slots), "--limit", str(slots), *warm]
    result = await bench.client("aiohttp", delay_urls(base, delays, run_tag()), "latency-cpu", *extra)
    return {
        "mode": f"bare aiohttp Semaphore({slots})",
        "urls": len(delays),
        "wall_s": round(result["wall_s"], 3),
        "cpu_s": round(result["cpu_s"], 3),
        **cpu_ms_per_page({"client": result["cpu_s"]}, len(delays)),
    }
