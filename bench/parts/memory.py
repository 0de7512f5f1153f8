"""Part 6 (target 5), memory: one worker (concurrency 100) crawls many /fast URLs while its RSS (VmRSS) is
sampled every 0.5 s; Redis memory per stored result from `INFO memory` (used_memory after completion
minus before submit, divided by N) and from `MEMORY USAGE` of the batch's hashes.

Then the producer (issue 9, item 8): the peak RSS of a real `crawlq submit FILE --json` process (its
`ru_maxrss` from wait4) for each size in `producer_memory_urls`, each against a fresh server of the
bench's own; no worker runs, so only the submit is measured."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.cluster import crawlq_settings, own_server, running_cluster, used_memory
from bench.context import Bench, PartRound
from bench.parts.submit import crawlq_command
from bench.procs import ROOT, rss_bytes
from bench.workload import fast_urls, run_tag
from crawlq import keys

__all__ = ["run"]

CONCURRENCY = 100
SAMPLE_S = 0.5
MIB = 1024 * 1024


async def _sample(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append((time.monotonic(), rss_bytes(pid)))
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except TimeoutError:
            pass


async def _key_bytes(redis: Redis, batch: str) -> dict[str, int]:
    names = {"results": keys.batch_results(batch), "urls": keys.batch_urls(batch), "meta": keys.batch_meta(batch)}
    names["jobs"] = keys.batch_jobs(batch)
    return {part: int(await redis.memory_usage(name, samples=0) or 0) for part, name in names.items()}


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    count = bench.profile.memory_urls
    base = bench.target.base
    settings = crawlq_settings(CONCURRENCY, 1)
    urls = fast_urls(base, count, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, 1, server, bench.log_dir("memory"), fast_urls(base, 200, run_tag())) as cluster,
    ):
        pid = cluster.processes[0].pid
        redis = cluster.client.redis
        before = await used_memory(redis)
        idle_rss = rss_bytes(pid)
        samples: list[tuple[float, int]] = []
        stop = asyncio.Event()
        started = time.perf_counter()
        report = await cluster.client.submit(urls)
        sampler = asyncio.create_task(_sample(pid, samples, stop))
        stats = await cluster.client.wait(report.batch, timeout_s=1800, poll_s=0.05)
        wall = time.perf_counter() - started
        stop.set()
        await sampler
        after = await used_memory(redis)
        key_bytes = await _key_bytes(redis, report.batch)
    if stats.succeeded != count:
        raise RuntimeError(f"memory run: {stats.succeeded} of {count} succeeded")
    rss = [value for _, value in samples if value]
    half = max(1, len(rss) // 2)
    first, second = statistics.fmean(rss[:half]), statistics.fmean(rss[half:] or rss[:half])
    row = {
        "mode": f"crawlq 1 worker x {CONCURRENCY}",
        "urls": count,
        "wall_s": round(wall, 3),
        "samples": len(rss),
        "idle_rss_mb": round(idle_rss / MIB, 1),
        "max_rss_mb": round(max(rss) / MIB, 1),
        "first_half_mb": round(first / MIB, 1),
        "second_half_mb": round(second / MIB, 1),
        "second/first": round(second / first, 4),
        "redis_bytes_per_result": round((after - before) / count, 1),
        **{f"{name}_bytes_per_url": round(value / count, 1) for name, value in key_bytes.items()},
    }
    part.rows.append(row)
    part.detail["rss_samples_mb"] = [round(value / MIB, 2) for value in rss]
    part.detail["used_memory"] = {"before": before, "after": after}
    for name in ("max_rss_mb", "second/first", "redis_bytes_per_result", "results_bytes_per_url", "urls_bytes_per_url"):
        part.figures[name] = row[name]
    for producer_count in bench.profile.producer_memory_urls:
        producer_row = await producer_peak(bench, producer_count)
        part.rows.append(producer_row)
        part.figures[f"producer max_rss_mb {producer_count:,}"] = producer_row["max_rss_mb"]
    peaks = [row["max_rss_mb"] for row in part.rows if str(row["mode"]).startswith("crawlq submit")]
    if peaks:
        part.figures["producer max_rss_mb"] = max(peaks)
    return part


def _write_urls(path: Path, base: str, count: int, tag: str, piece: int = 100_000) -> None:
    """The URLs of `fast_urls(base, count, tag)`, written a piece at a time (5M URLs are never in memory)."""
    with path.open("w") as handle:
        for start in range(0, count, piece):
            handle.write("".join(f"{base}/fast?r={tag}&i={i}\n" for i in range(start, min(count, start + piece))))


def _peak_of(command: list[str], env: dict[str, str], out: Path) -> tuple[float, int, int, float, str]:
    """Run `command`; (wall s, exit code, peak RSS bytes (ru_maxrss), CPU s) and its stdout+stderr tail."""
    started = time.perf_counter()
    with out.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)  # wait4 reaps it and reports its own peak RSS
    process.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - started
    return wall_s, process.returncode, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, out.read_text()[-2000:]


async def producer_peak(bench: Bench, count: int) -> dict[str, Any]:
    """`crawlq submit` of `count` URLs against a fresh server: its peak RSS, wall time and URLs/s."""
    with tempfile.TemporaryDirectory(dir=bench.workdir) as scratch:
        path, out = Path(scratch) / "urls.txt", Path(scratch) / "submit.out"
        await asyncio.to_thread(_write_urls, path, bench.target.base, count, run_tag())
        size = path.stat().st_size
        async with own_server() as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLQ_")}
            env["CRAWLQ_REDIS_URL"] = server.url
            command = [*crawlq_command(), "submit", str(path), "--json"]
            wall_s, code, peak, cpu_s, tail = await asyncio.to_thread(_peak_of, command, env, out)
    if code != 0:
        raise RuntimeError(f"crawlq submit of {count} URLs exited {code}: {tail[-300:]}")
    report = json.loads(tail.strip().splitlines()[-1])
    if report["queued"] != count:
        raise RuntimeError(f"crawlq submit queued {report['queued']} of {count}")
    return {
        "mode": f"crawlq submit FILE --json ({count:,} URLs)",
        "urls": count,
        "input_mb": round(size / MIB, 1),
        "wall_s": round(wall_s, 3),
        "urls_per_s": round(count / wall_s, 1),
        "cpu_s": round(cpu_s, 2),
        "max_rss_mb": round(peak / MIB, 1),
    }
