"""Part 3 (target 2), latency-bound: /delay pages with U(50,150) ms delays, 2 crawlq workers x 50,
timed from submit start to batch complete, against the ideal sum(delay) / 100. In the same round,
bare aiohttp with Semaphore(10) against its ideal sum(delay) / 10.

CPU per page is taken on longer batches in the same cluster (`latency_cpu_urls`, 6,000 in the full
profile: ~6 s; over a 2 s batch it moved by 20 % between rounds): the workers', Redis's and the
producer's. Issue 9's target: crawlq workers' CPU per page <= 1.3 x the bare loop's with the same pages in
flight. Two baselines run on the same delays:
- the same shape as crawlq: two bare processes with Semaphore(50) each, at once, on halves of the delays.
  CPU per page on this VM drifts by 10-20 % within a minute (two bare runs a minute apart: 0.294 and
  0.352 ms), so crawlq's CPU batches (`latency_cpu_pairs`) alternate with runs of this baseline: one
  before the first batch, one after each. Each batch is divided by the mean of the two runs around it,
  and the figure is the median of these ratios;
- bare aiohttp with Semaphore(100): one event loop with crawlq's 2 x 50 pages in flight, run once after
  the cluster and set against the median crawlq batch.
An event loop's CPU per page falls as more pages share each wake-up (Semaphore(10) costs ~1.8 x
Semaphore(100) per page here), so one loop with 100 in flight is the harder baseline for 2 x 50 workers.

The crawlq wall time is split with the stored results: first fetch (submit start to the first fetch start;
the submit call alone is `submit_s`), crawl (first fetch start to last fetch end) and tail (last fetch end
to the batch seen complete); the three add up to the wall time.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from bench.cluster import BatchRun, batch_phases, crawlq_settings, own_server, running_cluster, timed_batch
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
    shapes = [await _bare_same_shape(bench, cpu_delays)]
    cpu_batches: list[BatchRun] = []
    async with (
        own_server() as server,
        running_cluster(settings, WORKERS, server, bench.log_dir("latency"), warmup) as cluster,
    ):
        groups = {"redis": [server.pid or 0], "target": [bench.target.pid]}
        batch = await timed_batch(cluster, delay_urls(base, delays, run_tag()), groups)
        phases = await batch_phases(cluster, batch)
        for _ in range(bench.profile.latency_cpu_pairs):
            cpu_batches.append(await timed_batch(cluster, delay_urls(base, cpu_delays, run_tag()), groups))
            shapes.append(await _bare_same_shape(bench, cpu_delays))  # the workers idle meanwhile
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
    cpu_rows = [
        {
            "mode": f"crawlq {WORKERS} workers x {CONCURRENCY}, CPU batch {number + 1}",
            "urls": len(cpu_delays),
            "wall_s": round(cpu_batch.wall_s, 3),
            "cpu_s": cpu_batch.cpu_s["workers"],
            **cpu_ms_per_page({g: v for g, v in cpu_batch.cpu_s.items() if g != "target"}, len(cpu_delays)),
        }
        for number, cpu_batch in enumerate(cpu_batches)
    ]
    part.rows += cpu_rows
    same_in_flight = await _bare_same_in_flight(bench, cpu_delays, slots)
    alternated = _alternated(cpu_rows, shapes)
    for number, shape in enumerate(shapes):  # one row each (the report merges rows of one mode over rounds)
        shape["mode"] += f", {'before batch 1' if number == 0 else f'after batch {number}'}"
    part.rows += [same_in_flight, *shapes]
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
    crawlq_cpu, bare_cpu = alternated["crawlq"], same_in_flight["client_cpu_ms_per_page"]
    part.figures["crawlq workers cpu_ms/page"] = crawlq_cpu
    part.figures["crawlq redis cpu_ms/page"] = statistics.median(row["redis_cpu_ms_per_page"] for row in cpu_rows)
    part.figures[f"bare aiohttp Semaphore({slots}) cpu_ms/page"] = bare_cpu
    part.figures["crawlq workers / bare aiohttp cpu/page"] = round(crawlq_cpu / bare_cpu, 3) if bare_cpu else 0.0
    part.figures[f"bare aiohttp {WORKERS} x Semaphore({CONCURRENCY}) cpu_ms/page"] = alternated["bare"]
    part.figures["crawlq workers / bare aiohttp same shape cpu/page"] = alternated["ratio"]
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


def _alternated(crawlq_rows: list[dict[str, Any]], shapes: list[dict[str, Any]]) -> dict[str, float]:
    """crawlq's CPU batches set against the same-shape baseline runs that alternate with them (one more run
    than batches: before the first batch and after each): each batch over the mean of the runs just before
    and after it. Medians of crawlq's CPU per page, of the baseline's, and of the ratios."""
    if len(shapes) != len(crawlq_rows) + 1:
        raise ValueError(f"{len(crawlq_rows)} crawlq batches need {len(crawlq_rows) + 1} baseline runs around them")
    crawlq = [row["workers_cpu_ms_per_page"] for row in crawlq_rows]
    bare = [row["client_cpu_ms_per_page"] for row in shapes]
    around = [(bare[number] + bare[number + 1]) / 2 for number in range(len(crawlq))]
    ratios = [cpu / base for cpu, base in zip(crawlq, around, strict=True) if base]
    return {
        "crawlq": round(statistics.median(crawlq), 4),
        "bare": round(statistics.median(bare), 4),
        "ratio": round(statistics.median(ratios), 3) if ratios else 0.0,
    }


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
