"""Under load (issue 4, item 13): queue depth and stats stay consistent while 3 workers crawl 1,200 URLs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from crawlq_local.server import EmbeddedServer
from crawlq_local.target import ThreadedTargetSite
from tests.fault.conftest import QUEUE, Workers, assert_exactly_once, fault_env, run, settings_for, submit, write_urls


@dataclass(frozen=True)
class Snapshot:
    depth: dict[str, int]
    zcard: int
    total: int
    done: int
    succeeded: int
    failed: int
    complete: bool


async def sample_until_complete(redis_url: str, batch: str, timeout_s: float) -> list[Snapshot]:
    """Every 50 ms, a consistent snapshot: every client's writes (and key expiry) are held by `CLIENT PAUSE WRITE`
    while `Client.queue_depth()`, ZCARD and `Client.stats()` read, then released."""
    from producer.client import Client

    snapshots: list[Snapshot] = []
    deadline = time.monotonic() + timeout_s
    async with await Client.connect(settings_for(redis_url)) as client:
        while time.monotonic() < deadline:
            await client.redis.execute_command("CLIENT", "PAUSE", "2000", "WRITE")
            try:
                depth = dict(await client.queue_depth())
                zcard = await client.redis.zcard(QUEUE)
                stats = await client.stats(batch)
            finally:
                await client.redis.execute_command("CLIENT", "UNPAUSE")
            snapshots.append(
                Snapshot(depth, zcard, stats.total, stats.done, stats.succeeded, stats.failed, stats.complete)
            )
            if stats.complete:
                return snapshots
            await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch} not complete after {timeout_s:g} s; last snapshot {snapshots[-1:]}")


@pytest.mark.timeout(120)
def test_13_under_load_depth_and_stats_stay_consistent(
    server: EmbeddedServer, site: ThreadedTargetSite, tmp_path: Path
) -> None:
    """3 workers (concurrency 10) crawl N = 1,200 URLs with 0-50 ms latency; consistent snapshots are sampled.

    Invariants, in every snapshot: ready + deferred + in_progress == ZCARD of the queue == depth total;
    total == N; 0 <= done <= N, and done never decreases; succeeded + failed == done. At least 5 snapshots are
    taken before completion. At the end: depth all zero, and exactly once for N = 1,200.
    """
    n, batch = 1200, "load"
    env = fault_env(server.url)
    path = write_urls(tmp_path / "urls.txt", [site.url(f"/delay?ms={i % 51}&i={i}") for i in range(n)])
    with Workers(env, tmp_path, 3, "--concurrency", "10"):
        assert submit(env, path, batch)["queued"] == n
        started = time.monotonic()
        snapshots = run(sample_until_complete(server.url, batch, 90))
        elapsed = time.monotonic() - started
    print(f"\n[item 13] {len(snapshots)} snapshots over {elapsed:.1f} s; max depth {max(s.zcard for s in snapshots)}")
    running = [s for s in snapshots if not s.complete]
    assert len(running) >= 5
    for snapshot in snapshots:
        depth = snapshot.depth
        assert depth["ready"] + depth["deferred"] + depth["in_progress"] == snapshot.zcard == depth["total"], snapshot
        assert snapshot.total == n and 0 <= snapshot.done <= n, snapshot
        assert snapshot.succeeded + snapshot.failed == snapshot.done, snapshot
    dones = [s.done for s in snapshots]
    assert dones == sorted(dones), "done decreased"
    assert_exactly_once(server.url, batch, n)
