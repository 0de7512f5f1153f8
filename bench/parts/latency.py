"""Part 3 (target 2), latency-bound: /delay pages with U(50,150) ms delays, 2 crawlq workers x 50,
timed from submit start to batch complete, against the ideal sum(delay) / 100. In the same round,
bare aiohttp with Semaphore(10) against its ideal sum(delay) / 10.

CPU per page is taken on a second and longer batch in the same cluster (`latency_cpu_urls`, 6,000 in the
full profile: ~6 s; over a 2 s batch it moved by 20 % between rounds): the workers', Redis's and the
producer's. Issue 9's target: crawlq workers' CPU per page <= 1.3 x the bare loop's with the same pages in
flight. Two baselines run on the same delays:
- bare aiohttp with Semaphore(100): one event loop with crawlq's 2 x 50 pages in flight;
- the same shape as crawlq: two bare processes with Semaphore(50) each, at once, on halves of the delays,
  once before the crawlq cluster starts and once after it (the mean: CPU per page on this VM drifts by
  10-20 % within minutes, as the throughput part's bracketed bare loop also shows).
An event loop's CPU per page falls as more pages share each wake-up (Semaphore(10) costs ~1.8 x
Semaphore(100) per page here), so one loop with 100 in flight is the harder baseline for 2 x 50 workers.

The crawlq wall time is split with the stored results: first fetch (submit start to the first fetch start;
the submit call alone is `submit_s`), crawl (first fetch start to last fetch end) and tail (last fetch end
to the batch seen complete); the three add up to the wall time.
"""

from __future__ import annotations

import asyncio
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
    cpu_delays = delays_ms(bench.profile.latency_cpu_urls)
    slots = WORKERS * CONCURRENCY
    settings = crawlq_settings(CONCURRENCY, WORKERS)
    warmup = fast_urls(base, 200, run_tag())
    shape_before = await _bare_same_shape(bench, cpu_delays)
    async with (
        own_server() as server,
        running_cluster(settings, WORKERS, server, bench.log_dir("latency"), warmup) as cluster,
    ):
        groups = {"redis": [server.pid or 0], "target": [bench.target.pid]}
        batch = await timed_batch(cluster, delay_urls(base, delays, run_tag()), groups)
        phases = await batch_phases(cluster, batch)
        cpu_batch = await timed_batch(cluster, delay_urls(base, cpu_delays, run_tag()), groups)
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
    cpu_row = {
        "mode": f"crawlq {WORKERS} workers x {CONCURRENCY}, CPU batch",
        "urls": len(cpu_delays),
        "wall_s": round(cpu_batch.wall_s, 3),
        "cpu_s": cpu_batch.cpu_s["workers"],
        **cpu_ms_per_page({g: v for g, v in cpu_batch.cpu_s.items() if g != "target"}, len(cpu_delays)),
    }
    part.rows.append(cpu_row)
    same_in_flight = await _bare_same_in_flight(bench, cpu_delays, slots)
    shape_after = await _bare_same_shape(bench, cpu_delays)
    same_shape = _mean_of(shape_before, shape_after)
    part.rows += [same_in_flight, same_shape]
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
    crawlq_cpu, bare_cpu = cpu_row["workers_cpu_ms_per_page"], same_in_flight["client_cpu_ms_per_page"]
    shape_cpu = same_shape["client_cpu_ms_per_page"]
    part.figures["crawlq workers cpu_ms/page"] = crawlq_cpu
    part.figures["crawlq redis cpu_ms/page"] = cpu_row["redis_cpu_ms_per_page"]
    part.figures[f"bare aiohttp Semaphore({slots}) cpu_ms/page"] = bare_cpu
    part.figures["crawlq workers / bare aiohttp cpu/page"] = round(crawlq_cpu / bare_cpu, 3) if bare_cpu else 0.0
    part.figures[f"bare aiohttp {WORKERS} x Semaphore({CONCURRENCY}) cpu_ms/page"] = shape_cpu
    part.figures["crawlq workers / bare aiohttp same shape cpu/page"] = (
        round(crawlq_cpu / shape_cpu, 3) if shape_cpu else 0.0
    )
    part.figures["crawlq wall/ideal"] = part.rows[0]["wall/ideal"]
    part.figures["crawlq wall_s"] = part.rows[0]["wall_s"]
    part.figures["crawlq first_fetch_s"] = phases["first_fetch_s"]
    part.figures["bare aiohttp Semaphore(10) wall/ideal"] = part.rows[-1]["wall/ideal"]
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


def _mean_of(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One row for a baseline run before and after crawlq's: the mean of each measured figure, and both CPU
    figures."""
    row = dict(before)
    for key in ("wall_s", "cpu_s", "client_cpu_ms_per_page"):
        row[key] = round((before[key] + after[key]) / 2, 4)
    row["client_cpu_ms_per_page_before"] = before["client_cpu_ms_per_page"]
    row["client_cpu_ms_per_page_after"] = after["client_cpu_ms_per_page"]
    return row


async def _bare_same_shape(bench: Bench, delays: list[int]) -> dict[str, Any]:
    """`WORKERS` bare aiohttp processes at once, each with Semaphore(`CONCURRENCY`) on its share of the same
    delays: crawlq's pages in flight, split over as many event loops as crawlq's workers."""
    base = bench.target.base
    warm = ["--warmup-url", f"{base}/fast", "--warmup", str(CONCURRENCY)]
    extra = ["--concurrency", str(CONCURRENCY), "--limit", str(CONCURRENCY), *warm]
    shares = [delays[i::WORKERS] for i in range(WORKERS)]
    results = await asyncio.gather(
        *(
            bench.client("aiohttp", delay_urls(base, share, run_tag()), f"latency-shape-{i}", *extra)
            for i, share in enumerate(shares)
        )
    )
    cpu_s = sum(result["cpu_s"] for result in results)
    return {
        "mode": f"bare aiohttp {WORKERS} x Semaphore({CONCURRENCY})",
        "urls": len(delays),
        "wall_s": round(max(result["wall_s"] for result in results), 3),
        "cpu_s": round(cpu_s, 3),
        **cpu_ms_per_page({"client": cpu_s}, len(delays)),
    }
