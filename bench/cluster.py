"""Running crawlq for a measurement: a fresh Redis-protocol server, a LocalCluster of workers, a warm-up
batch, then timed batches (submit start to batch complete); plus Redis INFO readings."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.procs import CpuMeter, machine_busy_s
from crawlq.models import BatchStats
from crawlq.settings import HostRule, Settings
from crawlq_local.cluster import LocalCluster
from crawlq_local.server import EmbeddedServer

__all__ = [
    "BatchRun",
    "FetchSpan",
    "batch_phases",
    "commandstats",
    "crawlq_settings",
    "fetch_spans",
    "own_server",
    "running_cluster",
    "timed_batch",
    "used_memory",
    "wait_workers",
]

HOST_PATTERN = "127.0.0.1*"


#: `python -m bench --content off`: every crawlq cluster of the run without content extraction (issue 13:
#: the one-host and many-host figures with content on against off)
EXTRACT_CONTENT = {"on": True}


def crawlq_settings(concurrency: int, workers: int, **overrides: Any) -> Settings:
    """Settings for a bench cluster: politeness on (robots.txt, per-host gate), loopback allowed,
    and the per-host limit of the local target raised to twice the cluster's total concurrency."""
    rule = HostRule(pattern=HOST_PATTERN, concurrency=2 * concurrency * workers)
    values: dict[str, Any] = {
        "concurrency": concurrency,
        "host_rules": [rule],
        "allowed_networks": ["127.0.0.0/8", "::1/128"],  # the loopback target, not all private ranges
        "robots_enabled": True,
        "extract_content": EXTRACT_CONTENT["on"],
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def own_server() -> AsyncIterator[EmbeddedServer]:
    server = EmbeddedServer()
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


@asynccontextmanager
async def running_cluster(
    settings: Settings, workers: int, server: EmbeddedServer, log_dir: Path, warmup_urls: list[str]
) -> AsyncIterator[LocalCluster]:
    """A LocalCluster on `server` whose workers are up and have crawled `warmup_urls` (untimed)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    async with LocalCluster(settings, workers=workers, redis_url=server.url, log_dir=str(log_dir)) as cluster:
        await wait_workers(cluster, workers)
        if warmup_urls:
            report = await cluster.client.submit(warmup_urls)
            await cluster.client.wait(report.batch, timeout_s=120, poll_s=0.02)
        yield cluster


async def scale_to(cluster: LocalCluster, count: int) -> None:
    """Start workers until the cluster has `count`, and wait until all of them have a heartbeat."""
    while len(cluster.processes) < count:
        cluster.add_worker()
    await wait_workers(cluster, count)


async def wait_workers(cluster: LocalCluster, count: int, timeout_s: float = 60) -> None:
    """Wait until `count` workers have a heartbeat (they are connected and polling)."""
    deadline = time.monotonic() + timeout_s
    while len(await cluster.client.workers()) < count:
        for process in cluster.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"a crawlq worker exited at start (code {process.returncode}); see {cluster.log_dir}"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} crawlq workers did not start within {timeout_s:g} s")
        await asyncio.sleep(0.05)


@dataclass(slots=True)
class BatchRun:
    urls: int
    wall_s: float  #: submit start to batch complete, as seen by the polling client
    submit_s: float  #: the submit call alone
    stats: BatchStats
    cpu_s: dict[str, float] = field(default_factory=dict)  #: workers / producer (this process) / redis / target
    polls: int = 0  #: HGETALL calls made by the waiting client
    started_epoch_s: float = 0.0
    machine_busy_share: float = 0.0  #: all CPUs of the machine, busy share over the wall time

    @property
    def pages_per_s(self) -> float:
        return self.urls / self.wall_s


async def timed_batch(
    cluster: LocalCluster,
    urls: list[str],
    cpu_groups: dict[str, list[int]],
    workers: int | None = None,
    *,
    priority: int = 0,
) -> BatchRun:
    """Submit `urls` (at `priority`) and wait for completion (seen at once through the batch's events channel;
    progress read every 0.25 s); CPU of the workers, of this process (the producer: submit and waiting) and
    of `cpu_groups` over the same span."""
    worker_pids = [process.pid for process in cluster.processes[: workers or len(cluster.processes)]]
    meter = CpuMeter({"workers": worker_pids, "producer": [os.getpid()], **cpu_groups}).start()
    busy = machine_busy_s()
    started_epoch = time.time()
    started = time.perf_counter()
    report = await cluster.client.submit(urls, priority=priority)
    submitted = time.perf_counter()
    polls = 0

    def count(_stats: BatchStats) -> None:
        nonlocal polls
        polls += 1

    stats = await cluster.client.wait(report.batch, timeout_s=900, poll_s=0.25, on_progress=count)
    wall = time.perf_counter() - started
    cpu = meter.stop()
    busy_share = (machine_busy_s() - busy) / (wall * (os.cpu_count() or 1))
    if report.queued != len(urls) or stats.succeeded != len(urls):
        raise RuntimeError(f"crawlq batch: queued {report.queued}, succeeded {stats.succeeded} of {len(urls)}")
    return BatchRun(len(urls), wall, submitted - started, stats, cpu, polls, started_epoch, round(busy_share, 3))


@dataclass(frozen=True, slots=True)
class FetchSpan:
    url: str
    start_s: float  #: epoch s: the last attempt's start (fetched_at minus latency_ms)
    end_s: float  #: epoch s: fetched_at


async def fetch_spans(cluster: LocalCluster, batch: str) -> list[FetchSpan]:
    """Every stored result of `batch` as the span of its last attempt (ms resolution)."""
    return [
        FetchSpan(result.url, (result.fetched_at - (result.latency_ms or 0)) / 1000, result.fetched_at / 1000)
        async for result in cluster.client.results(batch)
    ]


async def batch_phases(cluster: LocalCluster, run: BatchRun) -> dict[str, float]:
    """Split a run's wall time with its stored results (fetched_at, epoch ms, minus latency_ms):
    first_fetch_s (submit start to the first fetch start), crawl_s (to the last fetch end) and tail_s
    (to the batch seen complete); the submit call alone is submit_s."""
    first, last = float("inf"), float("-inf")
    async for result in cluster.client.results(run.stats.batch):
        end = result.fetched_at / 1000 - run.started_epoch_s
        first, last = min(first, end - (result.latency_ms or 0) / 1000), max(last, end)
    return {
        "submit_s": round(run.submit_s, 3),
        "first_fetch_s": round(first, 3),
        "crawl_s": round(last - first, 3),
        "tail_s": round(max(0.0, run.wall_s - last), 3),
    }


async def commandstats(redis: Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (calls made inside Lua scripts included)."""
    info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in info.items()}


async def used_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])
