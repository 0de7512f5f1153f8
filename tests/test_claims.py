"""The worker's claims (`workers/lua/claim.lua` and `CrawlWorker.start_jobs`) against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib.resources import files

import pytest
from arq.connections import ArqRedis

from crawlq import keys
from crawlq.jobs import Entry
from crawlq.models import now_ms
from crawlq.settings import Settings
from crawlq.store import Store
from crawlq.urls import url_id
from workers.main import CrawlWorker

pytestmark = pytest.mark.timeout(20)


async def one_url_job(store: Store, batch: str, url: str, run_at_ms: int) -> str:
    before = set(await store.redis.hkeys(keys.batch_jobs(batch)))
    await store.enqueue(batch, [[Entry(url_id(url), url)]], run_at_ms=run_at_ms)
    (job_id,) = set(await store.redis.hkeys(keys.batch_jobs(batch))) - before
    return str(job_id.decode())


@pytest.fixture
async def worker(redis: ArqRedis, settings: Settings) -> AsyncIterator[tuple[CrawlWorker, asyncio.Event]]:
    """A CrawlWorker started but not polling; its jobs only wait for the returned event."""
    crawl_worker = CrawlWorker(settings, worker_id="claims-test")
    ctx = {"redis": redis}
    await crawl_worker._startup(ctx)
    release = asyncio.Event()

    async def run_job(job_id: str, score: int) -> None:
        await release.wait()

    crawl_worker.run_job = run_job  # type: ignore[method-assign]
    yield crawl_worker, release
    release.set()
    await asyncio.gather(*crawl_worker.tasks.values())
    await crawl_worker._shutdown(ctx)


async def test_a_claimed_suspect_blocks_further_claims_until_it_has_run(
    redis: ArqRedis, settings: Settings, worker: tuple[CrawlWorker, asyncio.Event]
) -> None:
    """A suspect job (its worker crashed while running it) must run alone: nothing may be claimed between
    its claim and its end, or a second crash would spend another job's tries."""
    crawl_worker, release = worker
    state = crawl_worker.state
    assert state is not None
    store = Store(redis, settings)
    now = now_ms()
    suspect = await one_url_job(store, "claims", "http://a.test/suspect", now - 2000)
    normal = await one_url_job(store, "claims", "http://a.test/normal", now - 1000)
    await redis.set(keys.arq_retry(suspect), 1)

    await crawl_worker.start_jobs([b"ready"])
    assert list(crawl_worker.tasks) == [suspect]  # a suspect is claimed alone...
    await crawl_worker.start_jobs([b"ready"])
    assert list(crawl_worker.tasks) == [suspect]  # ...and the normal job waits until it has run
    assert state.backlog_full()

    release.set()
    await crawl_worker.tasks[suspect]
    await asyncio.sleep(0)  # done callbacks
    assert not state.backlog_full()
    await crawl_worker.start_jobs([b"ready"])
    assert normal in crawl_worker.tasks


async def claim(redis: ArqRedis, settings: Settings, want: int, read_limit: int) -> list[str]:
    script = redis.register_script((files("workers") / "lua" / "claim.lua").read_text())
    reply = await script(
        keys=[settings.queue_name],
        args=[want, 15_000, read_limit, "0", keys.ARQ_IN_PROGRESS_PREFIX, keys.ARQ_RETRY_PREFIX],
    )
    return [reply[position].decode() for position in range(0, len(reply), 3)]


async def test_claims_reach_past_a_long_run_of_running_jobs_within_the_read_limit(
    redis: ArqRedis, settings: Settings
) -> None:
    """The queue head is mostly running jobs; the script reads it page by page up to `read_limit`."""
    store = Store(redis, settings)
    now = now_ms()
    jobs = [await one_url_job(store, "deep", f"http://a.test/{n}", now - 10_000 + n) for n in range(60)]
    for job_id in jobs[:45]:
        await redis.set(keys.arq_in_progress(job_id), "1", px=60_000)
    assert await claim(redis, settings, want=3, read_limit=40) == []  # all 40 it may read are running
    assert await claim(redis, settings, want=3, read_limit=256) == jobs[45:48]
    assert await claim(redis, settings, want=20, read_limit=256) == jobs[48:60]  # the rest, then the queue ends
    assert all([await redis.exists(keys.arq_in_progress(job_id)) for job_id in jobs])
