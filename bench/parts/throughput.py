"""Part 2 (target 1), throughput-bound: distinct /fast URLs, target in its own process.

Modes, each in the same round: bare aiohttp (one process, one session, Semaphore(100), connector limit
100, 100 warm-up GETs) with the asyncio loop and with uvloop, run just before and just after crawlq (the
ratio takes their mean: the machine's speed drifts); Scrapy (optional peer); plain arq, one job per URL,
2 worker processes; crawlq, 2 workers x concurrency 50 (the bare loop's 100 in flight, split over
two processes) with robots.txt and the per-host gate on (the gate's limit for 127.0.0.1 raised to 200).
crawlq is timed from submit start to batch complete. (2 x 100 is measurably slower on a 2-core machine: more
sockets and wake-ups for the same CPU; `python -m bench` records the setting with the figures.)
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bench import arq_peer
from bench.cluster import batch_phases, commandstats, crawlq_settings, own_server, running_cluster, timed_batch
from bench.context import Bench, PartRound
from bench.procs import ROOT, CpuMeter, run_json
from bench.workload import fast_urls, run_tag

__all__ = ["SETTINGS_NOTE", "Measured", "arq_run", "bracketed", "crawlq_run", "run"]

WORKERS = 2
CONCURRENCY = 50
ARQ_MAX_JOBS = 100
SETTINGS_NOTE = (
    f"crawlq: {WORKERS} workers x concurrency {CONCURRENCY}; robots.txt on (the target answers 404: allow all); "
    f"per-host gate on, limit for 127.0.0.1* raised to {2 * WORKERS * CONCURRENCY}; private addresses allowed"
)


@dataclass(slots=True)
class Measured:
    """One timed run: wall time and CPU per process group, and Redis commandstats when Redis was used."""

    mode: str
    pages: int
    wall_s: float
    cpu_s: dict[str, float]
    commands: dict[str, int] | None = None
    extra: dict[str, float] = field(default_factory=dict)  #: crawlq: phases, utilisation

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"mode": self.mode, "pages": self.pages, "wall_s": round(self.wall_s, 3)}
        row["pages_per_s"] = round(self.pages / self.wall_s, 1)
        for group, seconds in self.cpu_s.items():
            row[f"{group}_cpu_ms_per_page"] = round(1000 * seconds / self.pages, 4)
        return {**row, **self.extra}


def own_calls_removed(commands: dict[str, int], polls: dict[str, int]) -> dict[str, int]:
    """commandstats without the bench's own calls: INFO, CONFIG and the waiting client's polls."""
    out = {name: calls for name, calls in commands.items() if not name.startswith(("info", "config"))}
    for name, count in polls.items():
        out[name] = max(0, out.get(name, 0) - count)
    return {name: calls for name, calls in sorted(out.items(), key=lambda item: -item[1]) if calls}


async def bare_run(bench: Bench, urls: list[str], uvloop: bool) -> Measured:
    extra = ["--concurrency", "100", "--limit", "100", "--warmup-url", f"{bench.target.base}/fast", "--warmup", "100"]
    meter = CpuMeter({"target": [bench.target.pid]}).start()
    result = await bench.client("aiohttp", urls, "fast", *extra, *(["--uvloop"] if uvloop else []))
    target = meter.stop()["target"]
    _check("bare aiohttp", result["ok"], len(urls))
    mode = "bare aiohttp + uvloop" if uvloop else "bare aiohttp"
    return Measured(mode, len(urls), result["wall_s"], {"client": result["cpu_s"], "target": target})


async def scrapy_run(bench: Bench, urls: list[str], items: int) -> Measured:
    command = [sys.executable, "-m", "bench.scrapy_peer", "--urls", str(bench.url_file("scrapy", urls))]
    meter = CpuMeter({"target": [bench.target.pid]}).start()
    result = await run_json([*command, "--items", str(items)], timeout_s=900)
    target = meter.stop()["target"]
    _check("Scrapy", result["ok"], len(urls))
    mode = f"Scrapy {result['scrapy']} CONCURRENT_ITEMS={items}"
    return Measured(mode, len(urls), result["wall_s"], {"client": result["cpu_s"], "target": target})


async def arq_run(bench: Bench, urls: list[str], workers: int = WORKERS) -> Measured:
    """Plain arq: `workers` processes (max_jobs 100, poll 0.01), 200 warm-up jobs, then `urls` timed from
    the first enqueue to an empty queue; every result is checked afterwards."""
    async with own_server() as server:
        redis = Redis.from_url(server.url)
        log = open(bench.path("arq-workers.log"), "ab")
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.arq_peer", "--redis-url", server.url, "--name", str(number)]
                + ["--max-jobs", str(ARQ_MAX_JOBS)],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
            for number in range(workers)
        ]
        try:
            await _wait_arq_workers(redis, workers, processes)
            warmup = fast_urls(bench.target.base, 200, run_tag())
            await arq_peer.enqueue_fetch_jobs(redis, warmup)
            await arq_peer.wait_drained(redis)
            await redis.config_resetstat()
            pids = {"workers": [p.pid for p in processes], "redis": [server.pid or 0], "target": [bench.target.pid]}
            meter = CpuMeter(pids).start()
            started = time.perf_counter()
            await arq_peer.enqueue_fetch_jobs(redis, urls)
            polls = await arq_peer.wait_drained(redis)
            wall = time.perf_counter() - started
            cpu = meter.stop()
            commands = own_calls_removed(await commandstats(redis), {"zcard": polls})
            stored, ok = await arq_peer.count_results(redis)
            _check("arq", ok, len(urls) + len(warmup))
            return Measured(f"arq one job per URL, {workers} workers", len(urls), wall, cpu, commands)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                await asyncio.to_thread(_reap, process)
            log.close()
            await redis.aclose()


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _wait_arq_workers(redis: Redis, count: int, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while sum([await redis.exists(arq_peer.health_key(str(n))) for n in range(count)]) < count:
        if any(process.poll() is not None for process in processes) or time.monotonic() > deadline:
            raise RuntimeError("the arq peer workers did not start")
        await asyncio.sleep(0.05)


async def crawlq_run(bench: Bench, urls: list[str], name: str = "throughput") -> Measured:
    settings = crawlq_settings(CONCURRENCY, WORKERS)
    warmup = fast_urls(bench.target.base, 400, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, WORKERS, server, bench.log_dir(name), warmup) as cluster,
    ):
        redis = cluster.client.redis
        await redis.config_resetstat()
        batch = await timed_batch(cluster, urls, {"redis": [server.pid or 0], "target": [bench.target.pid]})
        commands = own_calls_removed(await commandstats(redis), {"hgetall": batch.polls, "subscribe": 1})
        extra = await batch_phases(cluster, batch)
    extra["worker_cpu_share"] = round(batch.cpu_s["workers"] / (batch.wall_s * WORKERS), 3)
    extra["machine_busy_share"] = batch.machine_busy_share
    mode = f"crawlq {WORKERS} workers x {CONCURRENCY}"
    return Measured(mode, len(urls), batch.wall_s, batch.cpu_s, commands, extra)


def bracketed(before: Measured, after: Measured) -> Measured:
    """One figure from two runs of the same mode taken just before and just after another mode's run:
    their mean wall time and CPU, so that a machine whose speed drifts during a round does not skew the
    ratio of the run they bracket."""
    cpu = {group: (seconds + after.cpu_s.get(group, 0.0)) / 2 for group, seconds in before.cpu_s.items()}
    rates = {"pages_per_s_before": round(before.pages / before.wall_s, 1)}
    rates["pages_per_s_after"] = round(after.pages / after.wall_s, 1)
    return Measured(before.mode, before.pages, (before.wall_s + after.wall_s) / 2, cpu, extra=rates)


async def run(bench: Bench) -> PartRound:
    """Scrapy and plain arq first; then bare aiohttp (asyncio, uvloop), crawlq, bare aiohttp (uvloop,
    asyncio): each bare figure is the mean of the runs just before and just after crawlq's."""
    part = PartRound(detail={"settings": SETTINGS_NOTE})
    count = bench.profile.throughput_urls
    base = bench.target.base
    scrapy: dict[int, Measured] = {}
    if bench.scrapy:
        for items in bench.profile.scrapy_variants:
            scrapy[items] = await scrapy_run(bench, fast_urls(base, count, run_tag()), items)
    else:
        part.skipped["Scrapy"] = "not installed (--full installs it; or pip install scrapy)"
    arq = await arq_run(bench, fast_urls(base, count, run_tag()))
    bare_before = await bare_run(bench, fast_urls(base, count, run_tag()), uvloop=False)
    bare_uv_before = await bare_run(bench, fast_urls(base, count, run_tag()), uvloop=True)
    crawlq = await crawlq_run(bench, fast_urls(base, count, run_tag()))
    bare_uv = bracketed(bare_uv_before, await bare_run(bench, fast_urls(base, count, run_tag()), uvloop=True))
    bare = bracketed(bare_before, await bare_run(bench, fast_urls(base, count, run_tag()), uvloop=False))
    measured_all = (bare, bare_uv, *scrapy.values(), arq, crawlq)
    for measured in measured_all:
        part.rows.append(measured.row())
    crawlq_rate = crawlq.pages / crawlq.wall_s
    for measured in measured_all:
        part.figures[f"{measured.mode} pages/s"] = round(measured.pages / measured.wall_s, 1)
        own = measured.cpu_s.get("workers", measured.cpu_s.get("client", 0.0))
        part.figures[f"{measured.mode} cpu_ms/page"] = round(1000 * own / measured.pages, 4)
    part.figures["crawlq / bare aiohttp"] = round(crawlq_rate * bare.wall_s / bare.pages, 4)
    part.figures["crawlq / bare aiohttp + uvloop"] = round(crawlq_rate * bare_uv.wall_s / bare_uv.pages, 4)
    for items, measured in scrapy.items():
        part.figures[f"crawlq / Scrapy CONCURRENT_ITEMS={items}"] = round(crawlq_rate * measured.wall_s / count, 3)
    part.figures["crawlq / arq"] = round(crawlq_rate * arq.wall_s / arq.pages, 3)
    part.detail["commands"] = {"crawlq": crawlq.commands, "arq": arq.commands, "urls": count}
    part.detail["cpu_s"] = {"crawlq": crawlq.cpu_s, "arq": arq.cpu_s}
    for group in ("redis", "producer"):
        part.figures[f"crawlq {group} cpu_ms/page"] = round(1000 * crawlq.cpu_s.get(group, 0.0) / crawlq.pages, 4)
    return part


def _check(mode: str, ok: int, expected: int) -> None:
    if ok != expected:
        raise RuntimeError(f"{mode}: {ok} of {expected} URLs answered 200")
