"""Submitting a batch: read the input, validate and canonicalise each line, de-duplicate, cut into chunks,
enqueue, all streamed: the first jobs are fetched while the rest of the input is read, and the producer's
memory does not grow with the input.

Input rules: lines end with `\\n` or `\\r\\n` only; a UTF-8 byte order mark at the start is skipped; blank
lines and `#` comments are skipped; a line that is not valid UTF-8, holds any other control character or
line separator (`\\r`, `\\x0c`, `\\x85`, U+2028...), or is not a valid http(s) URL is reported with its line
number and a reason (`InvalidLine`; its text is escaped, safe to print) and not queued.

Enqueueing is idempotent per URL: a URL already in the batch is never queued again, so a submit that
was interrupted (Redis down, Ctrl-C) is finished by running the same submit again. Duplicates are
dropped here within a window of recent URLs and by Redis (enqueue.lua) across the whole batch; the
`duplicates` count adds both.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import BinaryIO

from redis.exceptions import RedisError

from crawlq.connection import describe
from crawlq.errors import InvalidURL, RedisOutOfMemory, RedisUnavailable
from crawlq.jobs import Entry
from crawlq.memory import is_out_of_memory, out_of_memory_message
from crawlq.options import BatchOptions
from crawlq.settings import Settings
from crawlq.store import EnqueueOutcome, Store
from crawlq.urls import canonical, host_of, url_id

__all__ = [
    "MAX_LINE_BYTES",
    "InputFile",
    "InvalidLine",
    "LineParser",
    "SubmitReport",
    "chunk_size_for",
    "count_invalid",
    "grouped_by_host",
    "iter_lines",
    "new_batch_id",
    "open_input",
    "parse_lines",
    "printable",
    "submit_lines",
    "submit_token",
]

CHUNKS_PER_CALL = 20  #: chunks sent to Redis in one script call
#: a batch below `chunk_size` x this many URLs is cut into about this many chunks. Each job costs about ten Redis
#: round trips (claim, arq's bookkeeping, ownership, close), paid per chunk: 200 chunks (10-URL jobs for 2,000
#: URLs) made a latency-bound batch's worker CPU per page 2.0 x the bare loop's, 64 makes it 1.65 x
#: (`python -m bench --only latency`), and 64 jobs still give each of 16 workers four
SMALL_BATCH_CHUNKS = 64
FIRST_PIECE_CHUNKS = 2  #: the first piece parsed and sent is this small, so that fetching starts at once
#: URLs grouped by host at a time (after the first piece): a host's URLs within this window share chunks, so a
#: worker reuses its leases for them; the window bounds the submit's memory (about 200 bytes a URL)
GROUP_WINDOW = 20_000
HOSTS_PER_CHUNK = 5  #: a chunk holds stripes of at least this many hosts (smaller stripes in small chunks)
MIN_STRIPE = 4  #: but a stripe holds at least this many URLs: a host's few URLs stay in one chunk (one worker's leases)
HOST_STRIPE = 20  #: URLs of one host in a row (`grouped_by_host`): 10 rounds of reuse of a lease at the default limit
BLOCK_BYTES = 1 << 20  #: the input is read in blocks of this size
MAX_LINE_BYTES = 8192  #: a longer line cannot hold a valid URL (2048 characters of at most 4 bytes); kept no longer
PIECE_LINES = 10_000  #: lines validated at a time by `count_invalid`
SHOWN_CHARACTERS = 200  #: an invalid line is echoed up to this many characters
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True, frozen=True)
class InvalidLine:
    line: int  #: 1-based, counting `\\n`-terminated lines of the input
    text: str  #: the line, cut to `SHOWN_CHARACTERS` and escaped (`printable`): safe to print on a terminal
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
    invalid_lines: list[InvalidLine] = field(default_factory=list)  #: empty when they went to `on_invalid`

    def as_dict(self) -> dict[str, object]:
        return {"batch": self.batch, "queued": self.queued, "duplicates": self.duplicates, "invalid": self.invalid}


def new_batch_id() -> str:
    return time.strftime("b%Y%m%d-%H%M%S-") + os.urandom(3).hex()


def printable(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """`text` cut to `limit` characters, with control characters, escapes and separators escaped as repr does
    (an OSC sequence `\\x1b]0;title\\x07` is shown as those characters, not obeyed by the terminal)."""
    text = text[:limit]
    return text if text.isprintable() else repr(text)[1:-1]


def iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a binary stream, read a block at a time: split on `\\n` only, one trailing `\\r` dropped
    (so `\\r\\n` ends a line too), a last line without `\\n` included. A line longer than `MAX_LINE_BYTES` is
    not kept whole (it is invalid anyway), so memory stays bounded whatever the input."""
    pending = b""
    while block := stream.read(BLOCK_BYTES):
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_LINE_BYTES:
            pending = pending[: MAX_LINE_BYTES + 1]
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if pending:
        yield pending[:-1] if pending.endswith(b"\r") else pending


class LineParser:
    """Validate and canonicalise lines piece by piece, numbering them across pieces; blank lines and `#`
    comments are skipped. Lines may be `bytes` (read from a file: decoded here as UTF-8) or `str`.

    Invalid lines go to `on_invalid` if given, else they are kept in `invalid`. A canonical URL seen among
    the last `window` URLs is a duplicate (counted, not returned); `window=None` remembers every URL."""

    def __init__(self, on_invalid: Callable[[InvalidLine], None] | None = None, window: int | None = None) -> None:
        self.invalid: list[InvalidLine] = []
        self.invalid_count = 0
        self.duplicates = 0
        self._on_invalid = on_invalid if on_invalid is not None else self.invalid.append
        self._window = window
        self._seen: set[str] = set()
        self._older: set[str] = set()
        self._line = 0

    def feed(self, lines: Iterable[str | bytes]) -> list[Entry]:
        """The new entries among `lines` (which continue the lines fed before)."""
        entries: list[Entry] = []
        number = self._line
        for raw in lines:
            number += 1
            try:
                text = self._text(raw, number)
                if not text or text[0] == "#":
                    continue
                url = canonical(text)
            except InvalidURL as exc:
                self._refuse(number, raw, exc.reason)
                continue
            identity = url_id(url)
            if identity in self._seen or identity in self._older:
                self.duplicates += 1
                continue
            self._remember(identity)
            entries.append(Entry(identity, url))
        self._line = number
        return entries

    @staticmethod
    def _text(raw: str | bytes, number: int) -> str:
        if isinstance(raw, bytes):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw.lstrip(b" \t").startswith(b"#"):
                return ""  # a comment, whatever its encoding
            if len(raw) > MAX_LINE_BYTES:
                raise InvalidURL(f"line longer than {MAX_LINE_BYTES} bytes")
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidURL(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
        elif number == 1 and raw.startswith("\ufeff"):
            raw = raw[1:]
        return raw.strip(" \t")

    def _remember(self, identity: str) -> None:
        self._seen.add(identity)
        if self._window is not None and len(self._seen) >= self._window:
            self._older, self._seen = self._seen, set()

    def _refuse(self, number: int, raw: str | bytes, reason: str) -> None:
        text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
        self.invalid_count += 1
        self._on_invalid(InvalidLine(number, printable(text.strip(" \t")), reason))


def parse_lines(lines: Iterable[str | bytes]) -> ParsedInput:
    """Parse all of `lines` at once, remembering every URL (see `LineParser`)."""
    parser = LineParser()
    entries = parser.feed(lines)
    return ParsedInput(entries, parser.invalid, parser.duplicates)


def count_invalid(lines: Iterable[str | bytes], on_invalid: Callable[[InvalidLine], None] | None = None) -> int:
    """Validate every line and queue nothing (`crawlq submit --strict`'s first pass); the number of invalid
    lines. Memory stays bounded: nothing is kept but the count."""
    parser = LineParser(on_invalid or (lambda bad: None), window=PIECE_LINES)
    source = iter(lines)
    while piece := list(islice(source, PIECE_LINES)):
        parser.feed(piece)
    return parser.invalid_count


def submit_token(lines: Sequence[str | bytes]) -> str:
    """The producer's hold on its batch: a digest of the input, so that re-running an interrupted submit
    of the same input releases the hold the failed run could not release (it also expires after 30 s)."""
    digest = hashlib.blake2b(digest_size=8)
    for line in lines:
        digest.update(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(slots=True)
class InputFile:
    """A seekable input, scanned once (bytes only, cheap): its hold token is a digest of its bytes (the same
    file gives the same token, so re-running an interrupted submit releases the failed run's hold) and
    `lines` counts its lines (to size the chunks before parsing)."""

    handle: BinaryIO
    token: str
    lines: int

    @classmethod
    def scan(cls, handle: BinaryIO) -> InputFile:
        digest, count, last = hashlib.blake2b(digest_size=8), 0, b"\n"
        while block := handle.read(BLOCK_BYTES):
            digest.update(block)
            count += block.count(b"\n")
            last = block
        return cls(handle, digest.hexdigest(), count + (not last.endswith(b"\n")))

    def read(self) -> Iterator[bytes]:
        """The lines from the start (each call reads the input again)."""
        self.handle.seek(0)
        return iter_lines(self.handle)


@contextmanager
def open_input(source: str) -> Iterator[InputFile]:
    """The file `source`, or stdin for `-` (spooled to a temporary file, so that it can be read twice);
    raises OSError if it cannot be read."""
    if source != "-":
        with open(source, "rb") as handle:
            yield InputFile.scan(handle)
        return
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, BLOCK_BYTES)
        spool.seek(0)
        yield InputFile.scan(spool)


def chunk_size_for(count: int, settings: Settings) -> int:
    """Small batches get small chunks so that every worker gets a share (`SMALL_BATCH_CHUNKS` of them); large
    ones get `chunk_size`."""
    return max(1, min(settings.chunk_size, math.ceil(count / SMALL_BATCH_CHUNKS)))


def grouped_by_host(entries: Sequence[Entry], stripe: int = HOST_STRIPE) -> list[Entry]:
    """`entries` in stripes: each stripe is the next `stripe` URLs of one host (in input order), and the stripes
    go in the order of their first URL in the input.

    A chunk then holds few hosts, so a worker reuses one lease for many of their URLs; the jobs that follow
    one another (one claim takes several) hold different hosts, so a worker's jobs together have enough hosts
    to fill its fetch slots under the per-host limit; and a host whose URLs run through the whole input has
    stripes all through the queue, so it is neither left for the end nor does it hold up the others."""
    open_stripes: dict[str, list[Entry]] = {}
    stripes: list[list[Entry]] = []  #: in the order of their first URL
    for entry in entries:
        host = host_of(entry.url)
        current = open_stripes.get(host)
        if current is None or len(current) >= stripe:
            current = open_stripes[host] = []
            stripes.append(current)
        current.append(entry)
    return [entry for part in stripes for entry in part]


def _pieces(lines: Iterator[str | bytes], first: int, rest: int) -> Iterator[list[str | bytes]]:
    """`lines` cut into a small first piece (so fetching starts at once) and larger ones after it."""
    piece = list(islice(lines, first))
    while piece:
        yield piece
        piece = list(islice(lines, rest))


async def submit_lines(
    store: Store,
    batch: str,
    lines: Iterable[str | bytes],
    *,
    token: str | None = None,
    expected_count: int | None = None,
    on_invalid: Callable[[InvalidLine], None] | None = None,
    options: BatchOptions | None = None,
) -> SubmitReport:
    """Parse `lines` and enqueue them as they are parsed: the first jobs are in Redis (and being fetched)
    while the rest of the input is still being read. The batch cannot complete before this returns.

    :param token: the hold on the batch while this submit runs (see `InputFile`); by default a digest of
        `lines` if it is a Sequence, else a random one: the hold of an interrupted submit of an iterator is
        then not released by a re-run but expires 30 s after its last write.
    :param expected_count: about how many lines there are, to size the chunks (default: `len(lines)`, or
        `chunk_size` chunks for an iterator).
    :param on_invalid: called with each invalid line as it is found; without it they are kept in the report.
    :param options: the batch's fetch options, written once before its first URL.
    """
    await _save_options(store, batch, options)
    if token is None:
        token = submit_token(lines) if isinstance(lines, Sequence) else os.urandom(8).hex()
    if expected_count is None:
        expected_count = len(lines) if isinstance(lines, Sized) else store.settings.chunk_size * 200
    size = chunk_size_for(expected_count, store.settings)
    parser = LineParser(on_invalid, window=(CHUNKS_PER_CALL + 1) * size)
    pieces = (parser.feed(piece) for piece in _pieces(iter(lines), FIRST_PIECE_CHUNKS * size, CHUNKS_PER_CALL * size))
    report = await _enqueue_stream(store, batch, token, size, pieces)
    report.duplicates += parser.duplicates
    report.invalid = parser.invalid_count
    report.invalid_lines = parser.invalid
    return report


def _windows(pieces: Iterator[list[Entry]], size: int) -> Iterator[list[Entry]]:
    """The parsed entries grouped by host (`grouped_by_host`): the first piece alone (fetching starts at
    once), then windows of at least `GROUP_WINDOW` entries, then the rest. A chunk of `size` holds the
    stripes of about `HOSTS_PER_CHUNK` hosts, so that one job is not bound by one host's limit or delay, but a
    stripe holds at least `MIN_STRIPE` URLs, so that a host with a few URLs has them in one chunk."""
    stripe = max(MIN_STRIPE, min(HOST_STRIPE, size // HOSTS_PER_CHUNK))
    window: list[Entry] = []
    for number, entries in enumerate(pieces):
        window.extend(entries)
        if number == 0 or len(window) >= GROUP_WINDOW:
            yield grouped_by_host(window, stripe)
            window = []
    if window:
        yield grouped_by_host(window, stripe)


async def _send_whole_chunks(
    carry: list[Entry], size: int, send: Callable[[list[list[Entry]]], Awaitable[None]]
) -> int:
    """Send the whole chunks of `size` at the head of `carry`, at most `CHUNKS_PER_CALL` per call, and remove
    them from it (the rest, less than a chunk, stays); returns the number of calls."""
    whole = len(carry) - len(carry) % size
    calls = 0
    for start in range(0, whole, CHUNKS_PER_CALL * size):
        end = min(whole, start + CHUNKS_PER_CALL * size)
        await send([carry[at : at + size] for at in range(start, end, size)])
        calls += 1
    del carry[:whole]
    return calls


async def _save_options(store: Store, batch: str, options: BatchOptions | None) -> None:
    if options is None:
        return
    try:
        await store.save_options(batch, options)
    except (RedisError, OSError) as exc:
        where = describe(store.settings.redis_url)
        if is_out_of_memory(exc):
            raise RedisOutOfMemory(
                f"{await out_of_memory_message(store.redis, where)}; it refused the options of batch {batch}, so "
                "nothing was queued; raise maxmemory or free memory, then submit again"
            ) from exc
        raise RedisUnavailable(f"cannot reach Redis at {where} to submit batch {batch} ({type(exc).__name__})") from exc


async def _enqueue_stream(
    store: Store, batch: str, token: str, size: int, pieces: Iterator[list[Entry]]
) -> SubmitReport:
    """Cut the entries of `pieces` into chunks of `size` and enqueue them, at most `CHUNKS_PER_CALL` per
    script call; while one call is in Redis the next piece is parsed. Then release the submit hold."""
    report = SubmitReport(batch, 0, 0, 0)
    sending: asyncio.Task[EnqueueOutcome] | None = None
    sent = False  #: an earlier call wrote the batch: its counters must still be there

    async def settle() -> None:
        nonlocal sending
        if sending is not None:
            outcome, sending = await sending, None
            report.queued += outcome.added
            report.duplicates += outcome.duplicates
            report.jobs += outcome.jobs

    async def send(chunks: list[list[Entry]]) -> None:
        nonlocal sending, sent
        await settle()
        sending = asyncio.create_task(store.enqueue(batch, chunks, token=token, expect_batch=sent))
        sent = True
        await asyncio.sleep(0)  # let it write its command before the next piece is parsed

    try:
        carry: list[Entry] = []  #: grouped entries not yet sent (less than a chunk between windows)
        calls = 0
        for number, grouped in enumerate(_windows(pieces, size)):
            carry.extend(grouped)
            calls += await _send_whole_chunks(carry, size, send)
            if number == 0:
                await settle()  # the first piece is in Redis (and being fetched) before the rest is read
        if carry or calls == 0:
            await send([carry] if carry else [])
        await settle()
        await store.commit(batch, token=token)
    except (RedisError, OSError) as exc:
        if sending is not None:
            sending.cancel()
        where = describe(store.settings.redis_url)
        if is_out_of_memory(exc):
            raise RedisOutOfMemory(
                f"{await out_of_memory_message(store.redis, where)}; it refused the submit of batch {batch} after "
                f"{report.queued} URLs were queued; raise maxmemory or free memory, then submitting again with "
                f"--batch {batch} queues only the rest"
            ) from exc
        raise RedisUnavailable(
            f"lost Redis at {where} during the submit of batch {batch} after queuing {report.queued} URLs "
            f"({type(exc).__name__}); submitting again with --batch {batch} queues only the rest"
        ) from exc
    return report
