"""Part 1, the tutorial's table: sync vs threads vs asyncio vs crawlq on /delay pages (U(50,150) ms, seed 42).

Each peer runs in a fresh interpreter; crawlq runs 1, then 2, then 4 workers (concurrency 10 each) of
one cluster. Ideal time: the sum of delays / slots (the longest delay for unlimited aiohttp).
"""

from __future__ import annotations

from typing import Any

from bench.cluster import crawlq_settings, own_server, running_cluster, scale_to, timed_batch
from bench.context import Bench, PartRound
from bench.procs import CpuMeter, cpu_ms_per_page
from bench.workload import delay_urls, delays_ms, fast_urls, greedy_makespan_s, run_tag

__all__ = ["run"]

CRAWLQ_WORKERS = (1, 2, 4)
CONCURRENCY = 10
#: mode name, bench.clients mode, concurrency (0: no limit)
PEERS = (
    ("requests sequential", "requests", 1),
    ("threads(10) + requests", "threads", 10),
    ("aiohttp Semaphore(10)", "aiohttp", 10),
    ("aiohttp Semaphore(5)", "aiohttp", 5),
    ("aiohttp unlimited", "aiohttp", 0),
)


def _row(mode: str, wall_s: float, delays: list[int], slots: int, cpu_s: dict[str, float]) -> dict[str, Any]:
    """`cpu_s`: CPU seconds per process group; the first is the crawler's own (client or workers)."""
    ideal = max(delays) / 1000 if slots == 0 else sum(delays) / 1000 / slots
    greedy = max(delays) / 1000 if slots == 0 else greedy_makespan_s(delays, slots)
    return {
        "mode": mode,
        "wall_s": round(wall_s, 3),
        "ideal_s": round(ideal, 3),
        "greedy_s": round(greedy, 3),
        "efficiency": round(ideal / wall_s, 3),
        "cpu_s": round(next(iter(cpu_s.values())), 3),
        "target_cpu_s": round(cpu_s.get("target", 0.0), 3),
        **cpu_ms_per_page({group: value for group, value in cpu_s.items() if group != "target"}, len(delays)),
    }


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    delays = delays_ms(bench.profile.classic_urls)
    base = bench.target.base
    for mode, client, slots in PEERS:
        urls = delay_urls(base, delays, run_tag())
        warmup = ["--warmup-url", f"{base}/fast", "--warmup", str(max(1, slots) if slots else 10)]
        limit = ["--limit", "0"] if slots == 0 else []
        meter = CpuMeter({"target": [bench.target.pid]}).start()
        result = await bench.client(client, urls, "classic", "--concurrency", str(slots), *warmup, *limit)
        target_cpu = meter.stop()["target"]
        _check(mode, result["ok"], len(urls))
        part.rows.append(_row(mode, result["wall_s"], delays, slots, {"client": result["cpu_s"], "target": target_cpu}))
    await _crawlq(bench, part, delays)
    for row in part.rows:
        part.figures[f"{row['mode']} efficiency"] = row["efficiency"]
        part.figures[f"{row['mode']} wall_s"] = row["wall_s"]
        own = "workers_cpu_ms_per_page" if "workers_cpu_ms_per_page" in row else "client_cpu_ms_per_page"
        part.figures[f"{row['mode']} cpu_ms/page"] = row[own]
    return part


async def _crawlq(bench: Bench, part: PartRound, delays: list[int]) -> None:
    base = bench.target.base
    settings = crawlq_settings(CONCURRENCY, max(CRAWLQ_WORKERS))
    warmup = fast_urls(base, 50, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, 1, server, bench.log_dir("classic"), warmup) as cluster,
    ):
        for workers in CRAWLQ_WORKERS:
            await scale_to(cluster, workers)
            await _settle(cluster, fast_urls(base, 20 * workers, run_tag()))
            groups = {"redis": [server.pid or 0], "target": [bench.target.pid]}
            batch = await timed_batch(cluster, delay_urls(base, delays, run_tag()), groups, workers)
            mode = f"crawlq {workers} worker{'s' if workers > 1 else ''} x {CONCURRENCY}"
            part.rows.append(_row(mode, batch.wall_s, delays, CONCURRENCY * workers, batch.cpu_s))


async def _settle(cluster: Any, urls: list[str]) -> None:
    """A small untimed batch, so that newly added workers have fetched and committed once."""
    report = await cluster.client.submit(urls)
    await cluster.client.wait(report.batch, timeout_s=60, poll_s=0.02)


def _check(mode: str, ok: int, expected: int) -> None:
    if ok != expected:
        raise RuntimeError(f"{mode}: {ok} of {expected} URLs answered 200")
