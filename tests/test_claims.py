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


CLAIM_KEYS = [keys.SCHED, keys.PAUSED, keys.CLAIMED, keys.ACTIVE, keys.SCHED_TURN]


async def claim(redis: ArqRedis, settings: Settings, want: int, idle: bool = False) -> list[str]:
    script = redis.register_script((files("workers") / "lua" / "claim.lua").read_text())
    reply = await script(
        keys=[settings.queue_name, *CLAIM_KEYS],
        args=[
            want,
            15_000,
            256,
            "1" if idle else "0",
            keys.ARQ_IN_PROGRESS_PREFIX,
            keys.ARQ_RETRY_PREFIX,
            keys.BATCH_PREFIX,
        ],
    )
    return [reply[position].decode() for position in range(0, len(reply), 3)]


async def jobs_of(store: Store, batch: str, count: int, run_at_ms: int) -> list[str]:
    return [await one_url_job(store, batch, f"http://{batch}.test/{n}", run_at_ms + n) for n in range(count)]


async def test_claims_skip_running_jobs_and_take_the_ready_ones_in_run_time_order(
    redis: ArqRedis, settings: Settings
) -> None:
    """Jobs already running (their in-progress key exists) are never claimed again; the rest go in order."""
    store = Store(redis, settings)
    jobs = await jobs_of(store, "deep", 60, now_ms() - 10_000)
    for job_id in jobs[:45]:
        await redis.set(keys.arq_in_progress(job_id), "1", px=60_000)
    assert await claim(redis, settings, want=3) == jobs[45:48]
    assert await claim(redis, settings, want=20) == jobs[48:60]  # the rest, then the queue ends
    assert await claim(redis, settings, want=20) == []
    assert all([await redis.exists(keys.arq_in_progress(job_id)) for job_id in jobs])
    assert await redis.zcard(keys.batch_queue("deep")) == 0  # claimed jobs left their batch queue


async def test_jobs_in_no_batch_queue_are_rehomed_so_claims_find_them(redis: ArqRedis, settings: Settings) -> None:
    """A ready job that sits only in the arq queue (put there by hand, or by a crawlq before batch queues) is
    never claimed until the reconciler re-homes it: into its batch's queue, or the orphans' queue for a job of
    no known batch. Jobs already in place, or claimed, are left alone."""
    store = Store(redis, settings)
    old = await one_url_job(store, "legacy", "http://a.test/old", now_ms() - 1000)
    await redis.zrem(keys.batch_queue("legacy"), old)
    await redis.zadd(settings.queue_name, {"foreign-job": now_ms() - 1000})
    assert await claim(redis, settings, want=5) == []
    assert await store.rehome_orphans() == 2
    assert await store.rehome_orphans() == 0  # in place now: nothing moves twice
    assert await redis.zscore(keys.batch_queue(keys.ORPHANS_BATCH), "foreign-job") is not None
    assert sorted(await claim(redis, settings, want=5)) == sorted([old, "foreign-job"])
    assert await store.rehome_orphans() == 0  # claimed: left alone


async def test_a_deferred_job_is_claimed_only_when_due(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    later = await one_url_job(store, "later", "http://a.test/x", now_ms() + 60_000)
    assert await claim(redis, settings, want=5) == []
    await redis.zadd(settings.queue_name, {later: now_ms() - 1})
    await redis.zadd(keys.batch_queue("later"), {later: now_ms() - 1})
    assert await claim(redis, settings, want=5) == [later]


async def test_a_higher_priority_batch_is_claimed_first_even_when_submitted_later(
    redis: ArqRedis, settings: Settings
) -> None:
    store = Store(redis, settings)
    low = await jobs_of(store, "low", 10, now_ms() - 10_000)
    await redis.zadd(keys.SCHED, {"high": 5})
    high = await jobs_of(store, "high", 3, now_ms() - 5_000)  # younger than low, and ready
    assert await claim(redis, settings, want=2) == high[:2]
    assert await claim(redis, settings, want=3) == [high[2], *low[:2]]  # then the lower level fills the rest
    assert (await store.stats("high")).priority == 5


async def test_batches_of_equal_priority_take_turns(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    first = await jobs_of(store, "first", 20, now_ms() - 10_000)
    second = await jobs_of(store, "second", 20, now_ms() - 5_000)  # younger, and ready
    taken: list[str] = []
    for _ in range(10):
        taken += await claim(redis, settings, want=1)
    assert len([job for job in taken if job in first]) == 5
    assert len([job for job in taken if job in second]) == 5
    taken = await claim(redis, settings, want=6)
    assert len([job for job in taken if job in first]) == 3


async def test_a_paused_batch_is_skipped_until_it_is_resumed(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    jobs = await jobs_of(store, "held", 3, now_ms() - 1000)
    await redis.sadd(keys.PAUSED, "held")
    assert await claim(redis, settings, want=3) == []
    await redis.srem(keys.PAUSED, "held")
    assert await claim(redis, settings, want=3) == jobs


async def test_a_lapsed_lease_puts_the_job_back_as_a_suspect(redis: ArqRedis, settings: Settings) -> None:
    """A worker that died holding a job: once its lease lapses the job is claimable again, by an idle worker."""
    store = Store(redis, settings)
    (job,) = await jobs_of(store, "crash", 1, now_ms() - 1000)
    assert await claim(redis, settings, want=1) == [job]
    await redis.delete(keys.arq_in_progress(job))  # the lease lapsed
    await redis.set(keys.arq_retry(job), 1)  # arq counted the try
    await redis.zadd(keys.CLAIMED, {job: now_ms() - 1})  # the claimed entry is due
    assert await claim(redis, settings, want=1) == []  # back in its queue, but a suspect: not for a busy worker
    assert await redis.zscore(keys.batch_queue("crash"), job) is not None
    assert await claim(redis, settings, want=1, idle=True) == [job]


async def test_a_renewed_lease_keeps_the_job_claimed(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    (job,) = await jobs_of(store, "long", 1, now_ms() - 1000)
    assert await claim(redis, settings, want=1) == [job]
    await redis.zadd(keys.CLAIMED, {job: now_ms() - 1})  # due, but the worker renewed the in-progress key
    assert await claim(redis, settings, want=1, idle=True) == []
    assert (await redis.zscore(keys.CLAIMED, job) or 0) > now_ms()
