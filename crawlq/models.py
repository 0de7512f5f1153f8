"""What crawlq stores and reports: the error taxonomy, one URL's result, and a batch's statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from crawlq import histogram
from crawlq.stats import Family, Field

__all__ = ["CONTENT_FIELDS", "BatchStats", "Content", "ErrorClass", "UrlResult", "iso_ms", "now_ms"]


class ErrorClass(StrEnum):
    """Why a URL did not succeed. Stored in each result's `error` and counted in `error_counts`."""

    #: the attempt's overall deadline (connect, headers and body) passed
    TIMEOUT = "timeout"
    #: connection refused or reset, or closed before the response's headers were complete
    CONNECT = "connect"
    #: the reply is not valid HTTP/1.x (a bad status line, another protocol, malformed headers)
    PROTOCOL = "protocol"
    #: the body ended before its Content-Length or its last chunk; the status is kept
    TRUNCATED = "truncated"
    #: the host name did not resolve
    DNS = "dns"
    #: TLS handshake or certificate failure
    TLS = "tls"
    #: the server answered with a non-2xx status (final, or retries exhausted)
    HTTP_STATUS = "http_status"
    #: the decompressed body exceeded `max_body_bytes`
    TOO_LARGE = "too_large"
    #: a redirect chain looped or exceeded `max_redirects`
    REDIRECT_LOOP = "redirect_loop"
    #: a redirect without a usable http(s) Location
    BAD_REDIRECT = "bad_redirect"
    #: the address is loopback/private/link-local/... and not allowed (SSRF guard)
    BLOCKED_ADDRESS = "blocked_address"
    #: robots.txt disallows the URL for our user agent
    ROBOTS_DISALLOWED = "robots_disallowed"
    #: the URL failed validation
    INVALID_URL = "invalid_url"
    #: the body's Content-Encoding is unknown or its compressed bytes are corrupt (final at once)
    DECODE = "decode"
    #: the body could not be written to the body store (`CRAWLQ_STORE_BODIES`: disk full, no directory, no
    #: permission, Redis refused it); final at once, the worker keeps running
    STORAGE = "storage"
    #: the fetch was cancelled
    CANCELLED = "cancelled"
    #: the job carrying the URL crashed its worker `max_job_tries` times (poison), or arq failed it
    MAX_TRIES = "max_tries"
    #: the job carrying the URL was not picked up before `job_expires_s`
    EXPIRED = "expired"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


#: `Content` field -> its key in the compact Redis record
_CONTENT_KEYS = {
    "content_type": "ct",
    "encoding": "en",
    "title": "ti",
    "snippet": "sn",
    "etag": "et",
    "last_modified": "lm",
    "content_length": "cl",
    "content_language": "la",
    "content_encoding": "ce",
    "body_ref": "br",
}


@dataclass(slots=True)
class Content:
    """What a successful result records of its page and its response headers.

    `etag` and `last_modified` are the validators a conditional re-crawl sends back; `content_sha256`
    tells an unchanged body from a changed one."""

    content_type: str | None = None  #: the media type, lower case, without parameters (`text/html`)
    encoding: str | None = None  #: the character encoding the text was read with (text types only)
    title: str | None = None  #: the HTML `<title>`, whitespace collapsed
    snippet: str | None = None  #: the first `snippet_chars` characters of the visible text
    content_sha256: str | None = None  #: hex SHA-256 of the (decompressed) body
    etag: str | None = None
    last_modified: str | None = None
    content_length: int | None = None  #: the Content-Length header (bytes on the wire)
    content_language: str | None = None
    content_encoding: str | None = None  #: the Content-Encoding the body was decoded from (`br`, `gzip`...)
    body_ref: str | None = None  #: where the body is kept (`dir:/path/ab/<sha256>.gz`, `redis:<key>`), if stored

    def to_record(self, record: dict[str, Any]) -> None:
        """Add the non-empty fields to a compact record (the hash as 32 raw bytes)."""
        for name, key in _CONTENT_KEYS.items():
            value = getattr(self, name)
            if value is not None:
                record[key] = value
        if self.content_sha256 is not None:
            record["h"] = bytes.fromhex(self.content_sha256)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Content | None:
        if "h" not in record:
            return None
        content = cls(**{name: record.get(key) for name, key in _CONTENT_KEYS.items()})
        content.content_sha256 = bytes(record["h"]).hex()
        return content

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CONTENT_FIELDS}


#: the exported content columns, in order
CONTENT_FIELDS = [
    "content_type",
    "encoding",
    "title",
    "snippet",
    "content_sha256",
    "etag",
    "last_modified",
    "content_length",
    "content_language",
    "content_encoding",
    "body_ref",
]


@dataclass(slots=True)
class UrlResult:
    """The outcome of one URL. `latency_ms` is the last attempt's time to the end of the body."""

    url: str
    ok: bool
    status: int | None
    latency_ms: float | None
    attempts: int
    bytes: int
    error: ErrorClass | None  #: stored and exported as its string value
    message: str | None
    final_url: str
    fetched_at: int  #: epoch ms
    content: Content | None = None  #: successful results, unless content extraction is off
    #: a re-crawl found the page as it was: a 304, or a 200 with the earlier batch's content_sha256
    unchanged: bool = False
    #: the page's links, on their way from the fetch to the batch (a batch that follows links); never stored
    links: list[str] | None = None

    def to_record(self) -> dict[str, Any]:
        """The compact form stored in Redis (the URL lives in the batch manifest)."""
        record: dict[str, Any] = {"o": self.ok, "s": self.status, "a": self.attempts, "b": self.bytes}
        record["t"] = self.fetched_at
        if self.latency_ms is not None:
            record["l"] = round(self.latency_ms, 3)
        if self.error:
            record["e"] = self.error.value
        if self.message:
            record["m"] = self.message[:300]
        if self.final_url != self.url:
            record["f"] = self.final_url
        if self.content is not None:
            self.content.to_record(record)
        if self.unchanged:
            record["u"] = True
        return record

    @classmethod
    def from_record(cls, url: str, record: dict[str, Any]) -> UrlResult:
        return cls(
            url=url,
            ok=bool(record["o"]),
            status=record.get("s"),
            latency_ms=record.get("l"),
            attempts=int(record.get("a", 0)),
            bytes=int(record.get("b", 0)),
            error=ErrorClass(record["e"]) if record.get("e") else None,
            message=record.get("m"),
            final_url=record.get("f", url),
            fetched_at=int(record.get("t", 0)),
            content=Content.from_record(record),
            unchanged=bool(record.get("u", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The exported form (`crawlq results`): the content columns are null when there is no content."""
        content = self.content.to_dict() if self.content is not None else dict.fromkeys(CONTENT_FIELDS)
        return {
            "url": self.url,
            "ok": self.ok,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "attempts": self.attempts,
            "bytes": self.bytes,
            "error": self.error.value if self.error else None,
            "message": self.message,
            "final_url": self.final_url,
            "fetched_at": iso_ms(self.fetched_at),
            "unchanged": self.unchanged,
            **content,
        }


class BatchStats(BaseModel):
    """A batch's statistics, computed on read from the counters the workers increment."""

    batch: str
    state: str  #: "running", "paused", "complete", "lost" (its keys went missing from Redis) or "unknown"
    complete: bool
    total: int
    done: int
    pending: int
    succeeded: int
    failed: int
    success_rate: float | None
    avg_latency_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    status_counts: dict[str, int]
    error_counts: dict[str, int]
    attempts: int
    bytes: int
    unchanged: int = 0  #: re-crawled pages found as they were (304, or the same content_sha256)
    discovered: int = 0  #: URLs added by link following (the rest of `total` was submitted)
    #: URLs by depth: "0" the submitted ones, "1" those found on them, ... (link following)
    depth_counts: dict[str, int] = {}
    started_at: str | None
    finished_at: str | None
    elapsed_s: float | None
    pages_per_s: float | None
    lost_reason: str | None = None  #: why the batch is `lost` (which of its keys went missing)
    priority: int = 0  #: workers claim jobs of higher-priority batches first
    paused: bool = False  #: workers start no new fetch for it until it is resumed
    cancelled_at: str | None = None  #: when it was cancelled (its open URLs were recorded as `cancelled`)

    @classmethod
    def from_counters(cls, batch: str, raw: dict[str, str], now: int | None = None) -> BatchStats:
        """Build from the `meta` hash (decoded field -> value; the names are `crawlq.stats`')."""

        def number(name: Field) -> float:
            return float(raw.get(name, 0) or 0)

        def moment(name: Field) -> int | None:
            return int(raw[name]) if name in raw else None

        total, done = int(number(Field.TOTAL)), int(number(Field.DONE))
        succeeded, failed = int(number(Field.SUCCEEDED)), int(number(Field.FAILED))
        latency_n = int(number(Field.LATENCY_N))
        buckets = {int(k): int(v) for k, v in Family.LATENCY_BUCKET.counts(raw).items()}
        p50, p95, p99 = histogram.percentiles(buckets, (0.50, 0.95, 0.99))
        created, finished = moment(Field.CREATED_AT), moment(Field.FINISHED_AT)
        end = finished if finished is not None else (now if now is not None else now_ms())
        paused = finished is None and Field.PAUSED_AT in raw
        elapsed = (end - created) / 1000 if created is not None else None
        discovered = int(number(Field.DISCOVERED))
        return cls(
            batch=batch,
            state="complete" if finished is not None else ("paused" if paused else "running"),
            complete=finished is not None,
            total=total,
            done=done,
            pending=total - done,
            succeeded=succeeded,
            failed=failed,
            success_rate=round(succeeded / done, 6) if done else None,
            avg_latency_ms=round(number(Field.LATENCY_SUM_MS) / latency_n, 3) if latency_n else None,
            p50_ms=_round(p50),
            p95_ms=_round(p95),
            p99_ms=_round(p99),
            status_counts=_counts(raw, Family.STATUS),
            error_counts=_counts(raw, Family.ERROR),
            attempts=int(number(Field.ATTEMPTS)),
            bytes=int(number(Field.BYTES)),
            unchanged=int(number(Field.UNCHANGED)),
            discovered=discovered,
            depth_counts=_depths(raw, total - discovered),
            started_at=iso_ms(created),
            finished_at=iso_ms(finished),
            elapsed_s=round(elapsed, 3) if elapsed is not None else None,
            pages_per_s=round(done / elapsed, 2) if elapsed else None,
            priority=int(number(Field.PRIORITY)),
            paused=paused,
            cancelled_at=iso_ms(moment(Field.CANCELLED_AT)),
        )


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _depths(raw: dict[str, str], seeds: int) -> dict[str, int]:
    """`d:<depth>` counters (found URLs) and the seeds at depth 0; empty for a batch that found nothing."""
    found = {int(k): int(v) for k, v in Family.DEPTH.counts(raw).items() if k.isdigit()}
    if not found:
        return {}
    return {str(depth): count for depth, count in sorted({0: seeds, **found}.items())}


def _counts(raw: dict[str, str], family: Family) -> dict[str, int]:
    counts = {k: int(v) for k, v in family.counts(raw).items() if int(v)}
    return dict(sorted(counts.items()))
