"""The store's Lua scripts against a real server: exactly-once commits, dedupe, completion."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from crawlq import histogram, keys
from crawlq.errors import BatchLost, UnknownBatch
from crawlq.jobs import Deferral, Entry
from crawlq.models import ErrorClass, UrlResult, now_ms
from crawlq.settings import Settings
from crawlq.stats import counters
from crawlq.store import Store
from tests import factories


def entries(urls: list[str]) -> list[Entry]:
    return [factories.entry(u) for u in urls]


def ok_result(entry: Entry, latency_ms: float = 10.0, status: int = 200) -> UrlResult:
    return factories.result(entry.url, status=status, latency_ms=latency_ms)


async def test_enqueue_dedupes_within_and_across_calls(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    batch = entries([f"http://a.test/{i}" for i in range(10)])
    first = await store.enqueue("b1", [batch[:6], batch[6:]], token="t")
    again = await store.enqueue("b1", [batch[3:]], token="t")
    assert (first.added, first.duplicates, first.jobs) == (10, 0, 2)
    assert (again.added, again.duplicates, again.jobs) == (0, 7, 0)
    assert await redis.zcard(settings.queue_name) == 2
    assert (await store.stats("b1")).total == 10


async def test_an_enqueue_call_replayed_after_a_lost_reply_answers_as_the_first(
    redis: ArqRedis, settings: Settings
) -> None:
    """A client that lost the connection after sending an enqueue call sends it again (redis-py's retry, the
    API's and `crawlq submit`'s outage window): the second run of the same call must answer what the first
    did, so the submit reports its URLs as queued, not as duplicates, and must write nothing more."""
    store = Store(redis, settings)
    script = store._enqueue
    replies = []

    async def sent_twice(*, keys: list[str], args: list[object]) -> object:
        replies.append(await script(keys=keys, args=args))  # the reply that the dropped connection lost
        return await script(keys=keys, args=args)

    store._enqueue = sent_twice  # type: ignore[assignment]
    batch = entries([f"http://a.test/{i}" for i in range(10)])
    outcome = await store.enqueue("replayed", [batch[:6], batch[6:]], token="t")
    assert (outcome.added, outcome.duplicates, outcome.jobs) == (10, 0, 2)
    assert [int(value) for value in replies[0]] == [10, 0, 2]
    assert (await store.stats("replayed")).total == 10
    assert await redis.zcard(settings.queue_name) == 2
    later = await store.enqueue("replayed", [batch[4:]], token="t")  # a new call is a new call: duplicates
    assert (later.added, later.duplicates, later.jobs) == (0, 6, 0)


async def test_a_submit_whose_counters_vanished_writes_nothing_more(redis: ArqRedis, settings: Settings) -> None:
    """An evicting (or flushed) Redis dropped the batch's counters between two calls of one submit: the next
    call refuses to re-create the batch smaller (which would let it complete with URLs missing)."""
    store = Store(redis, settings)
    batch = entries([f"http://a.test/{i}" for i in range(10)])
    await store.enqueue("gone", [batch[:5]], token="t")
    await redis.delete(keys.batch_meta("gone"))
    with pytest.raises(BatchLost, match="batch gone is lost: its counters vanished"):
        await store.enqueue("gone", [batch[5:]], token="t", expect_batch=True)
    assert await redis.hlen(keys.batch_urls("gone")) == 5 and not await redis.exists(keys.batch_meta("gone"))
    assert (await store.enqueue("fresh", [batch], token="t", expect_batch=False)).added == 10


async def test_commit_is_first_write_wins_and_completes_once(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    batch = entries([f"http://a.test/{i}" for i in range(4)])
    await store.enqueue("b2", [batch], token="tok")
    results = [(e.url_id, ok_result(e, latency_ms=10.0 * (i + 1))) for i, e in enumerate(batch)]
    first = await store.commit("b2", results[:3])
    assert (first.added, first.completed) == (3, False)
    twice = await store.commit("b2", results, token="tok")
    assert (twice.added, twice.completed) == (1, True)
    again = await store.commit("b2", results)
    assert (again.added, again.completed) == (0, False)
    stats = await store.stats("b2")
    assert (stats.total, stats.done, stats.succeeded, stats.failed) == (4, 4, 4, 0)
    assert stats.avg_latency_ms == pytest.approx(25.0)
    assert stats.complete and stats.finished_at is not None
    assert await redis.sismember(keys.ACTIVE, "b2") == 0


async def test_batch_stays_open_while_a_submitter_is_live(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    batch = entries(["http://a.test/x"])
    await store.enqueue("b3", [batch], token="producer-1")
    outcome = await store.commit("b3", [(batch[0].url_id, ok_result(batch[0]))])
    assert outcome.added == 1 and not outcome.completed
    sealed = await store.commit("b3", token="producer-1")
    assert sealed.completed


async def test_commit_ignores_urls_outside_the_batch_and_unknown_batches(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    inside, outside = entries(["http://a.test/in", "http://a.test/out"])
    await store.enqueue("b4", [[inside]])
    outcome = await store.commit("b4", [(outside.url_id, ok_result(outside))])
    assert outcome.added == 0
    lost = await store.commit("nope", [(inside.url_id, ok_result(inside))])
    assert not lost.known_batch
    with pytest.raises(UnknownBatch):
        await store.stats("nope")


async def test_deferral_enqueues_only_open_urls(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    a, b = entries(["http://a.test/1", "http://a.test/2"])
    await store.enqueue("b5", [[a, b]])
    await redis.delete(settings.queue_name)
    await store.commit("b5", [(a.url_id, ok_result(a))], [Deferral([a, b], now_ms() + 5000)])
    queued = await redis.zrange(settings.queue_name, 0, -1, withscores=True)
    assert len(queued) == 1 and queued[0][1] > now_ms()
    owned = await redis.hget(keys.batch_jobs("b5"), queued[0][0])
    assert owned == b.url_id.encode()
    await store.commit("b5", [(b.url_id, ok_result(b))], [Deferral([a, b], now_ms())])
    assert await redis.zcard(settings.queue_name) == 1


async def test_results_stream_back_with_urls(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    batch = entries([f"http://a.test/{i}" for i in range(30)])
    await store.enqueue("b6", [batch])
    await store.commit("b6", [(e.url_id, ok_result(e, status=404)) for e in batch])
    records = [r async for r in store.iter_results("b6", page=7)]
    assert sorted(r.url for r in records) == sorted(e.url for e in batch)
    assert all(r.status == 404 and not r.ok for r in records)


def failed_result(entry: Entry, status: int | None, error: str) -> UrlResult:
    latency = None if status is None else 7.5
    return factories.result(
        entry.url,
        status=status,
        ok=False,
        latency_ms=latency,
        attempts=3,
        size_bytes=0,
        error=ErrorClass(error),
        message="boom",
    )


def test_counters_sum_what_the_results_add() -> None:
    a, b, c = entries(["http://a.test/1", "http://a.test/2", "http://a.test/3"])
    results = [ok_result(a, 10.0), ok_result(b, 10.0), failed_result(c, None, "connect")]
    counts, latency_sum = counters(results)
    bucket = f"h:{histogram.bucket_of(10.0)}"
    assert counts == {
        "done": 3,
        "succeeded": 2,
        "failed": 1,
        "s:200": 2,
        "e:connect": 1,
        bucket: 2,
        "latency_n": 2,
        "bytes": 200,
        "attempts": 5,
    }
    assert latency_sum == 20.0


async def test_a_commit_with_some_results_already_recorded_counts_only_the_new(
    redis: ArqRedis, settings: Settings
) -> None:
    store = Store(redis, settings)
    batch = entries([f"http://a.test/{i}" for i in range(5)])
    (outside,) = entries(["http://b.test/not-in-the-batch"])
    await store.enqueue("b6", [batch])
    first = await store.commit("b6", [(batch[0].url_id, ok_result(batch[0], 5.0))])
    assert first.added == 1
    mixed = [(e.url_id, failed_result(e, 500, "http_status")) for e in batch]  # batch[0] is recorded already
    mixed += [(outside.url_id, ok_result(outside)), (batch[1].url_id, ok_result(batch[1]))]  # a stranger, a repeat
    again = await store.commit("b6", mixed)
    assert (again.added, again.completed) == (4, True)
    stats = await store.stats("b6")
    assert (stats.done, stats.succeeded, stats.failed) == (5, 1, 4)
    assert stats.status_counts == {"200": 1, "500": 4} and stats.error_counts == {"http_status": 4}
    assert stats.attempts == 1 + 4 * 3 and stats.avg_latency_ms == pytest.approx((5.0 + 4 * 7.5) / 5)
    stored = {result.url: result for result in [r async for r in store.iter_results("b6")]}
    assert stored[batch[0].url].ok and not stored[batch[1].url].ok  # first write and first in the call win
    assert outside.url not in stored
    overall = await store.overall()
    assert (overall["done"], overall["succeeded"], overall["failed"]) == (5, 1, 4)


async def test_stranded_survives_the_last_jobs_closing_between_its_reads(
    redis: ArqRedis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stranded` reads the job table's size, then its names: when the last jobs close in between, it answers
    0 (nothing stranded) instead of sending Redis a ZMSCORE without members (an error `crawlq wait` showed)."""
    store = Store(redis, settings)

    async def one_job(name: str) -> int:
        return 1  # the table had a job when its size was read; it is gone when its names are

    monkeypatch.setattr(redis, "hlen", one_job)
    assert await store.stranded("closing") == 0
