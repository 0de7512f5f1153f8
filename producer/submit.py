"""Submitting a batch: validate and canonicalise each line, de-duplicate, cut into chunks, enqueue.

Enqueueing is idempotent per URL: a URL already in the batch is never queued again, so a submit that
was interrupted (Redis down, Ctrl-C) is finished by running the same submit again.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from crawlq.connection import describe
from crawlq.errors import InvalidURL, RedisUnavailable
from crawlq.jobs import Entry
from crawlq.settings import Settings
from crawlq.store import Store
from crawlq.urls import canonical, url_id

__all__ = ["InvalidLine", "SubmitReport", "chunk_size_for", "new_batch_id", "parse_lines", "submit_entries"]

CHUNKS_PER_CALL = 20  #: chunks sent to Redis in one script call


@dataclass(slots=True, frozen=True)
class InvalidLine:
    line: int
    text: str
    reason: str


@dataclass(slots=True)
class ParsedInput:
    entries: list[Entry] = field(default_factory=list)
    invalid: list[InvalidLine] = field(default_factory=list)
    duplicates: int = 0


@dataclass(slots=True)
class SubmitReport:
    batch: str
    queued: int
    duplicates: int
    invalid: int
    jobs: int = 0
    invalid_lines: list[InvalidLine] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"batch": self.batch, "queued": self.queued, "duplicates": self.duplicates, "invalid": self.invalid}


def new_batch_id() -> str:
    return time.strftime("b%Y%m%d-%H%M%S-") + os.urandom(3).hex()


def parse_lines(lines: Iterable[str]) -> ParsedInput:
    """Skip blank lines and `#` comments; keep the first spelling of each canonical URL."""
    parsed = ParsedInput()
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            url = canonical(text)
        except InvalidURL as exc:
            parsed.invalid.append(InvalidLine(number, text[:200], exc.reason))
            continue
        identity = url_id(url)
        if identity in seen:
            parsed.duplicates += 1
            continue
        seen.add(identity)
        parsed.entries.append(Entry(identity, url))
    return parsed


def submit_token(entries: list[Entry]) -> str:
    """The producer's hold on its batch: a digest of the URL set, so that re-running an interrupted submit
    of the same input releases the hold the failed run could not release (it also expires after 30 s)."""
    digest = hashlib.blake2b(digest_size=8)
    for identity in sorted(entry.url_id for entry in entries):
        digest.update(identity.encode())
    return digest.hexdigest()


def chunk_size_for(count: int, settings: Settings) -> int:
    """Small batches get small chunks so that every worker gets a share; large ones get `chunk_size`."""
    return max(1, min(settings.chunk_size, math.ceil(count / 200)))


def _chunks(entries: list[Entry], size: int) -> Iterator[list[Entry]]:
    for start in range(0, len(entries), size):
        yield entries[start : start + size]


async def submit_entries(store: Store, batch: str, parsed: ParsedInput) -> SubmitReport:
    """Enqueue the parsed entries of `batch`; the batch cannot complete before this returns."""
    report = SubmitReport(batch, 0, parsed.duplicates, len(parsed.invalid), invalid_lines=parsed.invalid)
    token = submit_token(parsed.entries)
    size = chunk_size_for(len(parsed.entries), store.settings)
    chunks = list(_chunks(parsed.entries, size))
    try:
        for start in range(0, max(1, len(chunks)), CHUNKS_PER_CALL):
            outcome = await store.enqueue(batch, chunks[start : start + CHUNKS_PER_CALL], token=token)
            report.queued += outcome.added
            report.duplicates += outcome.duplicates
            report.jobs += outcome.jobs
        await store.commit(batch, token=token)
    except (RedisError, OSError) as exc:
        where = describe(store.settings.redis_url)
        raise RedisUnavailable(
            f"lost Redis at {where} during the submit of batch {batch} after queuing {report.queued} URLs "
            f"({type(exc).__name__}); submitting again with --batch {batch} queues only the rest"
        ) from exc
    return report
