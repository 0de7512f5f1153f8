"""workers.tasks and the worker's backlog: a job run in-process against a real server and a local site."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from arq.connections import ArqRedis

import workers.state
from crawlq import keys
from crawlq.settings import Settings
from crawlq.store import Store
from crawlq.urls import canonical, host_of
from crawlq_local.target import TargetSite
from tests import factories
from workers import commits, tasks
from workers.gate import GateOutcome, HostGate
from workers.state import BACKLOG_CHUNKS, WorkerState

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def site() -> AsyncIterator[TargetSite]:
    async with TargetSite("127.0.0.1") as target:
        yield target


@pytest.fixture
async def state(redis: ArqRedis, settings: Settings) -> AsyncIterator[WorkerState]:
    started = await WorkerState.start(settings, redis, "test-worker")
    yield started
    await started.close()


async def queued_job(store: Store, batch: str, urls: list[str]) -> tuple[str, list[list[Any]]]:
    """Enqueue `urls` as one job of `batch`; its id and wire entries, as arq would hand them to `crawl`."""
    entries = [factories.entry(url) for url in urls]
    await store.enqueue(batch, [entries])
    (job_id,) = [job.decode() for job in await store.redis.hkeys(keys.batch_jobs(batch))]
    return job_id, [entry.to_wire() for entry in entries]


async def test_results_are_committed_while_a_slow_url_still_runs(
    state: WorkerState, site: TargetSite, redis: ArqRedis
) -> None:
    urls = [site.url(f"/ok?n={n}") for n in range(5)] + [site.url("/delay/2")]
    job_id, wire = await queued_job(state.store, "slow-tail", urls)
    ctx = {"state": state, "job_id": job_id, "job_try": 1}
    job = asyncio.create_task(tasks.crawl(ctx, "slow-tail", wire))
    await asyncio.sleep(commits.FLUSH_S + 0.6)
    done_meanwhile = int(await redis.hget(keys.batch_meta("slow-tail"), "done") or 0)
    assert not job.done()
    assert done_meanwhile == 5  # the fast URLs did not wait for the slow one
    assert await job == 6
    assert (await state.store.stats("slow-tail")).done == 6
    assert state.engine.pending == 0


async def test_a_failed_commit_leaves_no_url_counted_as_pending(
    state: WorkerState, site: TargetSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = [site.url(f"/ok?n={n}") for n in range(3)] + [site.url("/delay/5")]
    job_id, wire = await queued_job(state.store, "broken-commit", urls)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(state.store, "commit", broken)
    ctx = {"state": state, "job_id": job_id, "job_try": 1}
    with pytest.raises(ConnectionError):
        await tasks.crawl(ctx, "broken-commit", wire)
    await asyncio.sleep(0.05)  # the cancelled fetch's done callback runs
    assert state.engine.pending == 0  # the worker does not think its backlog is still full


def test_room_is_signalled_when_the_backlog_falls_below_its_limit(state: WorkerState) -> None:
    state.chunk_estimate = 10
    limit = state.settings.concurrency + BACKLOG_CHUNKS * 10
    assert state.backlog_limit() == limit
    state.engine.pending = int(limit) + 1
    state.room.clear()
    state.finished(1)
    assert state.backlog_full() and not state.room.is_set()
    state.finished(1)
    assert not state.backlog_full() and state.room.is_set()
    state.room.clear()
    state.claimed.add("a-claimed-job")  # a claimed job counts as a chunk until its URLs are registered
    state.engine.pending = int(limit) - 9
    state.finished(1)
    assert state.backlog_full() and not state.room.is_set()


@asynccontextmanager
async def stalled_job(
    redis: ArqRedis, settings: Settings, site: TargetSite, batch: str, count: int
) -> AsyncIterator[tuple[WorkerState, asyncio.Task[int]]]:
    """A worker (concurrency 20, 2 per host) running a job of `count` URLs of a host that another worker fills:
    every URL waits (stalled). On leaving, the host is freed and the job must finish every URL."""
    small = settings.model_copy(update={"concurrency": 20, "per_host_concurrency": 2})
    state = await WorkerState.start(small, redis, f"{batch}-worker")
    other = HostGate(redis, small, "other-worker")
    other.start()
    try:
        host = host_of(canonical(site.url("/ok")))
        leases = [await other.acquire(host, 2, 0.0) for _ in range(2)]  # the host is full cluster-wide
        job_id, wire = await queued_job(state.store, batch, [site.url(f"/ok?n={n}") for n in range(count)])
        job = asyncio.create_task(tasks.crawl({"state": state, "job_id": job_id, "job_try": 1}, batch, wire))
        await asyncio.sleep(0.5)
        state.chunk_estimate = 10  # as if later jobs were smaller (the job set it to its own size)
        yield state, job
        for grant in leases:
            other.release(host, grant.lease or "", GateOutcome.OK)
        assert await asyncio.wait_for(job, timeout=10) == count
    finally:
        await other.close()
        await state.close()


async def test_urls_waiting_for_a_full_host_leave_room_to_claim(
    redis: ArqRedis, settings: Settings, site: TargetSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose URLs all wait for a host that another worker fills claims more (its fetch slots would
    idle otherwise), up to the hard cap; URLs it can fetch keep the usual limit."""
    monkeypatch.setattr(workers.state, "BACKLOG_MAX_FACTOR", 3)  # a cap of 3 x 20 + 10 URLs binds at 60 held
    async with stalled_job(redis, settings, site, "stalled", 60) as (state, _):
        assert state.engine.pending == 60 and state.engine.in_flight == 0
        assert state.backlog() > state.backlog_limit()  # the old rule would claim nothing more
        assert state.engine.stalled() == 60
        assert not state.backlog_full()
        assert state.backlog_room() == state.backlog_cap() - 60  # bounded by the hard cap


async def test_fetchable_urls_keep_the_usual_backlog_limit(
    redis: ArqRedis, settings: Settings, site: TargetSite
) -> None:
    small = settings.model_copy(update={"concurrency": 20})
    state = await WorkerState.start(small, redis, "busy-worker")
    try:
        job_id, wire = await queued_job(state.store, "busy", [site.url(f"/delay/1?n={n}") for n in range(40)])
        job = asyncio.create_task(tasks.crawl({"state": state, "job_id": job_id, "job_try": 1}, "busy", wire))
        await asyncio.sleep(0.3)
        state.chunk_estimate = 10
        assert state.engine.stalled() == 0
        assert state.backlog_full()  # 40 fetchable URLs >= 20 + one job of 10
        await asyncio.wait_for(job, timeout=10)
    finally:
        await state.close()


async def test_a_higher_priority_batch_waiting_lifts_the_cap_on_stalled_urls(
    redis: ArqRedis, settings: Settings, site: TargetSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker at its hard cap of URLs stalled on a busy host claims nothing more, unless a batch of a higher
    priority than every batch it holds waits to be claimed: then only the fetchable-URL limit applies."""
    monkeypatch.setattr(workers.state, "BACKLOG_MAX_FACTOR", 3)  # cap: 3 x 20 + 10 URLs
    async with stalled_job(redis, settings, site, "low", 70) as (state, _):
        assert state.held == {"low": 70} and state.engine.stalled() == 70
        assert state.backlog_full()  # 70 held >= the cap of 70
        await redis.zadd(keys.SCHED, {"high": 5})  # a batch of priority 5 waits to be claimed
        assert state.control is not None
        await state.control.refresh()
        assert state.outranked() and not state.backlog_full()
        assert state.backlog_room() == state.backlog_limit()  # every held URL is stalled
        await redis.zadd(keys.SCHED, {"high": 0})  # the same priority as the batch held: the cap holds again
        await state.control.refresh()
        assert not state.outranked() and state.backlog_full()
    assert not state.held
