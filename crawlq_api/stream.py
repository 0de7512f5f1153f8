"""Streaming a batch's results as JSON lines or CSV; with `follow`, new results are sent as they are
committed until the batch completes (woken by the batch's events channel, polled as a fallback)."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator

import orjson
from redis.asyncio.client import PubSub

from crawlq import keys
from crawlq.codec import unpack
from crawlq.connection import result_of
from crawlq.errors import UnknownBatch
from crawlq.export import RESULT_FIELDS, csv_row
from crawlq.models import UrlResult
from crawlq.store import Store

__all__ = ["MEDIA_TYPES", "follow_results", "format_rows", "stored_results"]

MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_PAGE = 1000


async def format_rows(results: AsyncIterator[UrlResult], fmt: str) -> AsyncIterator[bytes]:
    """Each result as one JSON line or CSV row (CSV starts with its header)."""
    if fmt == "jsonl":
        async for result in results:
            yield orjson.dumps(result.to_dict()) + b"\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS, extrasaction="ignore")
    writer.writeheader()
    async for result in results:
        writer.writerow(csv_row(result.to_dict()))
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue().encode()


async def stored_results(store: Store, batch: str) -> AsyncIterator[UrlResult]:
    async for result in store.iter_results(batch):
        yield result


async def _manifest(store: Store, batch: str) -> dict[str, str]:
    raw = await result_of(store.redis.hgetall(keys.batch_urls(batch)))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def _new_results(store: Store, batch: str, pending: dict[str, str]) -> list[tuple[str, UrlResult]]:
    """The (url id, result) pairs recorded since the last look among `pending` (url id -> URL), which loses them."""
    found: list[tuple[str, UrlResult]] = []
    ids = list(pending)
    for start in range(0, len(ids), _PAGE):
        page = ids[start : start + _PAGE]
        for url_id, record in zip(page, await store.results_for(batch, page), strict=True):
            if record is not None:
                found.append((url_id, UrlResult.from_record(pending.pop(url_id), unpack(record))))
    return found


async def _pause(events: PubSub, pause_s: float) -> None:
    deadline = time.monotonic() + pause_s
    while (left_s := deadline - time.monotonic()) > 0:
        if await events.get_message(ignore_subscribe_messages=True, timeout=left_s) is not None:
            return


async def follow_results(store: Store, batch: str, poll_s: float, max_s: float) -> AsyncIterator[UrlResult]:
    """Every result of `batch`, the recorded ones first, then each new one as it is committed, until the
    batch completes (or is lost, or `max_s` passes)."""
    deadline = time.monotonic() + max_s
    sent: set[str] = set()
    known = -1
    pending: dict[str, str] = {}
    async with store.redis.pubsub() as events:
        await events.subscribe(keys.batch_events(batch))  # before the first read: no completion is missed
        while True:
            try:
                complete = (await store.stats(batch)).complete  # read before the results it vouches for
            except UnknownBatch:
                return
            size = await result_of(store.redis.hlen(keys.batch_urls(batch)))
            if size != known:
                known = size
                pending = {k: v for k, v in (await _manifest(store, batch)).items() if k not in sent}
            for url_id, result in await _new_results(store, batch, pending):
                sent.add(url_id)
                yield result
            if (complete and not pending) or time.monotonic() >= deadline:
                return
            await _pause(events, poll_s)
