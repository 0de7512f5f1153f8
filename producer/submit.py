"""Submitting a batch: validate and canonicalise each line, de-duplicate, cut into chunks, enqueue, all
streamed: the first jobs are fetched while the rest of the input is parsed.

Enqueueing is idempotent per URL: a URL already in the batch is never queued again, so a submit that
was interrupted (Redis down, Ctrl-C) is finished by running the same submit again.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from crawlq.connection import describe
from crawlq.errors import InvalidURL, RedisUnavailable
from crawlq.jobs import Entry
from crawlq.settings import Settings
from crawlq.store import EnqueueOutcome, Store
from crawlq.urls import canonical, host_of, url_id

__all__ = [
    "InvalidLine",
    "LineParser",
    "SubmitReport",
    "chunk_size_for",
    "grouped_by_host",
    "new_batch_id",
    "parse_lines",
    "submit_entries",
    "submit_lines",
    "submit_token",
]

CHUNKS_PER_CALL = 20  #: chunks sent to Redis in one script call
FIRST_PIECE_CHUNKS = 2  #: the first piece parsed and sent is this small, so that fetching starts at once


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


class LineParser:
    """Validate and canonicalise lines piece by piece, keeping the first spelling of each canonical URL
    across pieces; blank lines and `#` comments are skipped, invalid lines kept with their number."""

    def __init__(self) -> None:
        self.parsed = ParsedInput()
        self._seen: set[str] = set()
        self._line = 0

    def feed(self, lines: Iterable[str]) -> list[Entry]:
        """The new entries among `lines` (which continue the lines fed before)."""
        parsed, seen = self.parsed, self._seen
        entries: list[Entry] = []
        number = self._line
        for raw in lines:
            number += 1
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
            entries.append(Entry(identity, url))
        self._line = number
        parsed.entries.extend(entries)
        return entries


def parse_lines(lines: Iterable[str]) -> ParsedInput:
    """Parse all of `lines` at once (see `LineParser`)."""
    parser = LineParser()
    parser.feed(lines)
    return parser.parsed


def submit_token(lines: Sequence[str]) -> str:
    """The producer's hold on its batch: a digest of the input, so that re-running an interrupted submit
    of the same input releases the hold the failed run could not release (it also expires after 30 s)."""
    digest = hashlib.blake2b(digest_size=8)
    for line in lines:
        digest.update(line.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


def chunk_size_for(count: int, settings: Settings) -> int:
    """Small batches get small chunks so that every worker gets a share; large ones get `chunk_size`."""
    return max(1, min(settings.chunk_size, math.ceil(count / 200)))


def grouped_by_host(entries: Sequence[Entry]) -> list[Entry]:
    """`entries` with the URLs of each host together (hosts in order of first appearance, each host's URLs
    in input order), so that a chunk holds few hosts and a worker reuses one lease for many of its URLs."""
    by_host: dict[str, list[Entry]] = {}
    for entry in entries:
        host = host_of(entry.url)
        group = by_host.get(host)
        if group is None:
            by_host[host] = [entry]
        else:
            group.append(entry)
    return [entry for group in by_host.values() for entry in group]


def _pieces(lines: Sequence[str], first: int, rest: int) -> Iterator[Sequence[str]]:
    """`lines` cut into a small first piece (so fetching starts at once) and larger ones after it."""
    yield lines[:first]
    for start in range(first, len(lines), rest):
        yield lines[start : start + rest]


async def submit_lines(store: Store, batch: str, lines: Sequence[str]) -> SubmitReport:
    """Parse `lines` and enqueue them as they are parsed: the first jobs are in Redis (and being fetched)
    while the rest of the input is still being parsed. The batch cannot complete before this returns."""
    size = chunk_size_for(len(lines), store.settings)
    parser = LineParser()
    pieces = (parser.feed(piece) for piece in _pieces(lines, FIRST_PIECE_CHUNKS * size, CHUNKS_PER_CALL * size))
    report = await _enqueue_stream(store, batch, submit_token(lines), size, pieces)
    report.duplicates += parser.parsed.duplicates
    report.invalid = len(parser.parsed.invalid)
    report.invalid_lines = parser.parsed.invalid
    return report


async def submit_entries(store: Store, batch: str, parsed: ParsedInput, token: str) -> SubmitReport:
    """Enqueue entries parsed before (`crawlq submit --strict` checks every line first)."""
    size = chunk_size_for(len(parsed.entries), store.settings)
    report = await _enqueue_stream(store, batch, token, size, iter([parsed.entries]))
    report.duplicates += parsed.duplicates
    report.invalid = len(parsed.invalid)
    report.invalid_lines = parsed.invalid
    return report


async def _enqueue_stream(
    store: Store, batch: str, token: str, size: int, pieces: Iterator[list[Entry]]
) -> SubmitReport:
    """Cut the entries of `pieces` into chunks of `size` and enqueue them, at most `CHUNKS_PER_CALL` per
    script call; while one call is in Redis the next piece is parsed. Then release the submit hold."""
    report = SubmitReport(batch, 0, 0, 0)
    sending: asyncio.Task[EnqueueOutcome] | None = None

    async def settle() -> None:
        nonlocal sending
        if sending is not None:
            outcome, sending = await sending, None
            report.queued += outcome.added
            report.duplicates += outcome.duplicates
            report.jobs += outcome.jobs

    async def send(chunks: list[list[Entry]]) -> None:
        nonlocal sending
        await settle()
        sending = asyncio.create_task(store.enqueue(batch, chunks, token=token))
        await asyncio.sleep(0)  # let it write its command before the next piece is parsed

    try:
        carry: list[Entry] = []
        calls = 0
        for entries in pieces:
            carry.extend(grouped_by_host(entries))
            whole = len(carry) - len(carry) % size
            for start in range(0, whole, CHUNKS_PER_CALL * size):
                end = min(whole, start + CHUNKS_PER_CALL * size)
                await send([carry[at : at + size] for at in range(start, end, size)])
                calls += 1
            del carry[:whole]
        if carry or calls == 0:
            await send([carry] if carry else [])
        await settle()
        await store.commit(batch, token=token)
    except (RedisError, OSError) as exc:
        if sending is not None:
            sending.cancel()
        where = describe(store.settings.redis_url)
        raise RedisUnavailable(
            f"lost Redis at {where} during the submit of batch {batch} after queuing {report.queued} URLs "
            f"({type(exc).__name__}); submitting again with --batch {batch} queues only the rest"
        ) from exc
    return report
