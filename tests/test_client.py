"""The Python API's wait: completion is seen at once through the batch's events channel, not on a poll tick."""

from __future__ import annotations

import asyncio
import time

import pytest
from arq.connections import ArqRedis

from crawlq.errors import UnknownBatch
from crawlq.jobs import Entry
from crawlq.models import UrlResult
from crawlq.settings import Settings
from crawlq.store import Store
from producer.client import Client
from tests import factories


def _entry(url: str) -> Entry:
    return factories.entry(url)


def _result(entry: Entry) -> UrlResult:
    return factories.result(entry.url, latency_ms=5.0, size_bytes=10)


async def test_wait_returns_when_the_batch_completes_not_on_the_next_poll(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    entries = [_entry(f"http://a.test/{i}") for i in range(3)]
    await store.enqueue("w1", [entries])
    client = Client(redis, settings)
    progress: list[int] = []
    waiting = asyncio.create_task(
        client.wait("w1", timeout_s=20, poll_s=30, on_progress=lambda s: progress.append(s.done))
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = time.monotonic()
    await store.commit("w1", [(e.url_id, _result(e)) for e in entries])
    stats = await asyncio.wait_for(waiting, timeout=5)
    assert time.monotonic() - started < 2  # a 30 s poll would still be asleep
    assert stats.complete and stats.done == 3
    assert progress == [0, 3]


async def test_wait_returns_at_once_for_a_complete_batch(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    entry = _entry("http://a.test/done")
    await store.enqueue("w2", [[entry]])
    await store.commit("w2", [(entry.url_id, _result(entry))])
    stats = await asyncio.wait_for(Client(redis, settings).wait("w2", poll_s=30), timeout=5)
    assert stats.complete


async def test_wait_times_out_with_progress_in_the_message(redis: ArqRedis, settings: Settings) -> None:
    store = Store(redis, settings)
    entries = [_entry("http://a.test/1"), _entry("http://a.test/2")]
    await store.enqueue("w3", [entries])
    await store.commit("w3", [(entries[0].url_id, _result(entries[0]))])
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"w3 not complete after 0.3 s \(1/2\)"):
        await Client(redis, settings).wait("w3", timeout_s=0.3, poll_s=30)
    assert time.monotonic() - started < 3  # the deadline, not the poll delay, ends the wait


async def test_wait_for_an_unknown_batch_raises(redis: ArqRedis, settings: Settings) -> None:
    with pytest.raises(UnknownBatch):
        await Client(redis, settings).wait("never-submitted", timeout_s=1)
