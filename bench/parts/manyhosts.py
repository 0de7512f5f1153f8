"""Part `manyhosts` (issue 11, targets 1-3): many loopback hosts under the default politeness, the case users live in.

Shapes, each `manyhosts_urls` distinct URLs spread round-robin over N hosts (`bench.hosts_target`: a plain aiohttp
site answering on 127.0.0.1, 127.0.0.2, ... as IP literals, one process): N = 64, and N = urls / 20 (20 URLs per
host). crawlq runs with its defaults (2 requests in flight per host, no delay, robots.txt on), 2 workers x
concurrency 100, the address guard allowing exactly the loopback networks. Beside it, in the same round, the polite
bare loop: one aiohttp session, Semaphore(100), `TCPConnector(limit=100, limit_per_host=2)`, run just before and
just after crawlq (the ratio uses their mean). Redis commands per URL are `INFO commandstats` over the batch (calls
inside Lua scripts included; the bench's own INFO, CONFIG and wait polls removed).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from bench.cluster import EXTRACT_CONTENT, commandstats, own_server, running_cluster, timed_batch
from bench.context import Bench, PartRound
from bench.hosts_target import host_address, urls_round_robin
from bench.parts.throughput import Measured, bracketed, own_calls_removed
from bench.procs import ROOT, CpuMeter
from bench.workload import run_tag
from crawlq.settings import Settings

__all__ = ["LOOPBACK_NETWORKS", "SETTINGS_NOTE", "hosts_target", "manyhosts_settings", "run", "take_starts"]

WORKERS = 2
CONCURRENCY = 100
PER_HOST = 2  #: the default per_host_concurrency, and the bare loop's limit_per_host
URLS_PER_HOST = 20  #: shape (b)
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]
SETTINGS_NOTE = (
    f"crawlq: {WORKERS} workers x concurrency {CONCURRENCY}, default politeness ({PER_HOST} per host, no delay, "
    f"robots.txt on), allowed networks {','.join(LOOPBACK_NETWORKS)}; bare: Semaphore({CONCURRENCY}), "
    f"TCPConnector(limit={CONCURRENCY}, limit_per_host={PER_HOST})"
)


def manyhosts_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "allowed_networks": LOOPBACK_NETWORKS,
        "extract_content": EXTRACT_CONTENT["on"],
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def hosts_target(hosts: int, *, record_starts: bool = False) -> AsyncIterator[tuple[int, int]]:
    """`python -m bench.hosts_target` on `hosts` loopback addresses: yields (port, pid).

    :param record_starts: the site notes each request's start time per host (read with `take_starts`)"""
    command = [sys.executable, "-m", "bench.hosts_target", "--hosts", str(hosts)]
    command += ["--record-starts"] if record_starts else []
    process = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        if not line:
            raise RuntimeError("the many-hosts target exited at start")
        yield int(json.loads(line)["port"]), process.pid
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def take_starts(port: int) -> dict[str, list[float]]:
    """The request start times the target noted per host since the last call (monotonic s), then forgotten."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{host_address(0)}:{port}/__starts") as reply:
        reply.raise_for_status()
        starts: dict[str, list[float]] = await reply.json()
    return starts


async def take_served(port: int) -> list[tuple[str, str, float, float]]:
    """The delayed requests the target served since the last call: (host, `i`, handler start, handler end),
    epoch s, then forgotten."""
    async with aiohttp.ClientSession() as session, session.get(f"http://{host_address(0)}:{port}/__served") as reply:
        reply.raise_for_status()
        return [(host, i, start, end) for host, i, start, end in await reply.json()]


async def _bare(bench: Bench, urls: list[str], mode: str, target_pid: int) -> Measured:
    extra = ["--concurrency", str(CONCURRENCY), "--limit", str(CONCURRENCY), "--limit-per-host", str(PER_HOST)]
    meter = CpuMeter({"target": [target_pid]}).start()
    result = await bench.client("aiohttp", urls, "manyhosts", *extra, "--warmup-url", urls[0], "--warmup", "100")
    target = meter.stop()["target"]
    if result["ok"] != len(urls):
        raise RuntimeError(f"polite bare aiohttp: {result['ok']} of {len(urls)} URLs answered 200")
    return Measured(mode, len(urls), result["wall_s"], {"client": result["cpu_s"], "target": target})


async def run(bench: Bench) -> PartRound:
    count = bench.profile.manyhosts_urls
    shapes = (64, max(1, count // URLS_PER_HOST))
    part = PartRound(detail={"settings": SETTINGS_NOTE, "urls": count})
    async with hosts_target(max(shapes)) as (port, target_pid), own_server() as server:
        warmup = urls_round_robin(port, 1, 200, run_tag())
        log_dir = bench.log_dir("manyhosts")
        async with running_cluster(manyhosts_settings(), WORKERS, server, log_dir, warmup) as cluster:
            redis = cluster.client.redis
            for label, hosts in zip(("a", "b"), shapes, strict=True):
                bare_mode = f"{label}: {hosts} hosts, bare aiohttp limit_per_host={PER_HOST}"
                before = await _bare(bench, urls_round_robin(port, hosts, count, run_tag()), bare_mode, target_pid)
                await redis.config_resetstat()
                urls = urls_round_robin(port, hosts, count, run_tag())
                batch = await timed_batch(cluster, urls, {"redis": [server.pid or 0], "target": [target_pid]})
                polls = {"hgetall": batch.polls, "subscribe": 1}
                commands = own_calls_removed(await commandstats(redis), polls)
                after = await _bare(bench, urls_round_robin(port, hosts, count, run_tag()), bare_mode, target_pid)
                bare = bracketed(before, after)
                mode = f"{label}: {hosts} hosts, crawlq {WORKERS} workers x {CONCURRENCY}"
                crawlq = Measured(mode, count, batch.wall_s, batch.cpu_s)
                per_url = sum(commands.values()) / count
                for measured in (bare, crawlq):
                    part.rows.append(measured.row())
                part.rows[-1]["redis_commands_per_url"] = round(per_url, 3)
                part.figures[f"{label}: crawlq / polite bare aiohttp"] = round(bare.wall_s / batch.wall_s, 4)
                part.figures[f"{label}: crawlq pages/s"] = round(count / batch.wall_s, 1)
                part.figures[f"{label}: polite bare aiohttp pages/s"] = round(count / bare.wall_s, 1)
                part.figures[f"{label}: Redis commands/URL"] = round(per_url, 3)
                part.detail[f"commands {label}"] = commands
    part.detail["hosts"] = {"first": host_address(0), "last": host_address(max(shapes) - 1)}
    return part
