"""What a worker knows of each batch it runs: its fetch options, read from Redis once per batch and cached,
and per job the earlier batch's validators for a conditional re-crawl.

Validators are read when a job starts (one HMGET of the earlier batch's results for the job's URLs), not
carried in the job entries: the job format stays as it is, a re-crawl submitted long after its earlier
batch still reads that batch's latest records, and one round trip per job costs nothing per URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crawlq.jobs import Entry
from crawlq.models import Content, UrlResult
from crawlq.options import BatchOptions, is_secret_header
from crawlq.store import Store
from workers.fetcher import RequestSpec

__all__ = ["BatchContext", "BatchContexts", "JobContext"]

CACHED_BATCHES = 256  #: batches whose options a worker keeps (a batch's options never change)


@dataclass(slots=True, frozen=True)
class BatchContext:
    options: BatchOptions
    request: RequestSpec

    @classmethod
    def of(cls, options: BatchOptions) -> BatchContext:
        headers = options.request_headers()
        private = frozenset(name.lower() for name in headers if is_secret_header(name))
        return cls(options, RequestSpec(headers, private, options.proxy, options.address_policy))


@dataclass(slots=True)
class JobContext:
    """One job's view: its batch, and the earlier records of its URLs when the batch re-crawls."""

    batch: BatchContext
    earlier: dict[str, dict[str, Any]] = field(default_factory=dict)  #: url id -> earlier record

    def request_for(self, entry: Entry) -> RequestSpec:
        record = self.earlier.get(entry.url_id)
        if record is None or not record.get("o"):
            return self.batch.request
        headers = dict(self.batch.request.headers)
        if record.get("et"):
            headers["If-None-Match"] = str(record["et"])
        if record.get("lm"):
            headers["If-Modified-Since"] = str(record["lm"])
        if len(headers) == len(self.batch.request.headers):
            return self.batch.request
        base = self.batch.request
        return RequestSpec(headers, base.private, base.proxy, base.address_rules)

    def finish(self, url_id: str, result: UrlResult) -> UrlResult:
        """Mark a re-crawled page `unchanged` (a 304, or a 200 with the earlier hash); a 304 keeps the
        earlier record's content description, hash included."""
        record = self.earlier.get(url_id)
        if record is None or not result.ok:
            return result
        earlier = Content.from_record(record)
        if result.status == 304:
            result.unchanged = True
            if earlier is not None:
                result.content = earlier
        elif earlier is not None and result.content is not None:
            result.unchanged = result.content.content_sha256 == earlier.content_sha256
        return result


class BatchContexts:
    """The batches a worker has seen, by id: their options, read once each."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[str, BatchContext] = {}

    async def get(self, batch: str) -> BatchContext:
        found = self._known.get(batch)
        if found is None:
            if len(self._known) >= CACHED_BATCHES:
                self._known.clear()
            found = self._known[batch] = BatchContext.of(await self.store.load_options(batch))
        return found

    async def job(self, batch: str, entries: Sequence[Entry]) -> JobContext:
        context = JobContext(await self.get(batch))
        earlier = context.batch.options.recrawl_of
        if earlier and entries:
            context.earlier = await self.store.earlier_records(earlier, [e.url_id for e in entries])
        return context
