"""What a worker knows of each batch it runs: its fetch options, read from Redis once per batch and cached,
and per job the earlier batch's validators for a conditional re-crawl.

For a batch that follows links, `JobContext.found_on` turns a page's links into the `Discovery` the
committer adds to the batch: canonical, in scope, not past `max_depth`, and not disallowed by the
robots.txt of the page's own origin (its verdict is at hand: the page was just checked against it).
Links to other origins are checked against their robots.txt when they are fetched, as any URL is, and
so become `robots_disallowed` results.

Validators are read when a job starts (one HMGET of the earlier batch's results for the job's URLs), not
carried in the job entries: the job format stays as it is, a re-crawl submitted long after its earlier
batch still reads that batch's latest records, and one round trip per job costs nothing per URL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crawlq.errors import InvalidURL
from crawlq.follow import Scope
from crawlq.jobs import Discovery, Entry
from crawlq.models import Content, UrlResult
from crawlq.options import BatchOptions, is_secret_header
from crawlq.store import Store
from crawlq.urls import canonical, origin_of, url_id
from workers.fetcher import RequestSpec
from workers.robots import RobotsCache

__all__ = ["BatchContext", "BatchContexts", "JobContext"]

CACHED_BATCHES = 256  #: batches whose options a worker keeps (a batch's options never change)


@dataclass(slots=True, frozen=True)
class BatchContext:
    options: BatchOptions
    request: RequestSpec
    scope: Scope | None = None  #: the batch follows links

    @classmethod
    def of(cls, options: BatchOptions) -> BatchContext:
        headers = options.request_headers()
        private = frozenset(name.lower() for name in headers if is_secret_header(name))
        follow = options.follow
        request = RequestSpec(headers, private, options.proxy, options.address_policy, links=follow is not None)
        return cls(options, request, Scope(follow.scope) if follow is not None else None)


@dataclass(slots=True)
class JobContext:
    """One job's view: its batch, and the earlier records of its URLs when the batch re-crawls."""

    batch: BatchContext
    earlier: dict[str, dict[str, Any]] = field(default_factory=dict)  #: url id -> earlier record

    def request_for(self, entry: Entry) -> RequestSpec:
        base = self.batch.request
        follow = self.batch.options.follow
        if follow is not None and entry.depth >= follow.max_depth:  # its links would be too deep: not parsed
            base = dataclasses.replace(base, links=False)
        record = self.earlier.get(entry.url_id)
        if record is None or not record.get("o"):
            return base
        headers = dict(self.batch.request.headers)
        if record.get("et"):
            headers["If-None-Match"] = str(record["et"])
        if record.get("lm"):
            headers["If-Modified-Since"] = str(record["lm"])
        if len(headers) == len(base.headers):
            return base
        return dataclasses.replace(base, headers=headers)

    async def found_on(self, entry: Entry, links: Sequence[str], robots: RobotsCache | None) -> Discovery | None:
        """The links of page `entry` that join the batch (see the module docstring), or None."""
        follow, scope = self.batch.options.follow, self.batch.scope
        if follow is None or scope is None or entry.depth >= follow.max_depth:
            return None
        page_origin = origin_of(entry.url)
        kept: dict[str, str] = {}
        for link in links:
            try:
                url = canonical(link)
            except InvalidURL:
                continue
            if url == entry.url or not scope.allows(entry.url, url):
                continue
            if robots is not None and origin_of(url) == page_origin:
                if not (await robots.verdict(url)).allowed(url, robots.agent):
                    continue
            kept.setdefault(url_id(url), url)
        if not kept:
            return None
        return Discovery(entry.url_id, [Entry(uid, url, 0, entry.depth + 1) for uid, url in kept.items()])

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
