"""The batch counters: the field names of a batch's `meta` hash and the overall counters, and what results add.

A batch's `meta` hash (`keys.batch_meta`) and the overall counters (`keys.STATS_ALL`) hold the same counter
fields; `meta` also holds the batch's life (`created_at`, `finished_at`, ...) and scheduling state. This module
owns every field name, for writers and readers alike:

- writers: `counters` (the increments `Store.commit` and `BatchControl.cancel` send to `lua/commit.lua` and
  `lua/cancel.lua`), `BatchControl` (priority, pause, cancel), `Store.mark_lost`, and the Lua scripts
  `lua/enqueue.lua`, `lua/discover.lua` and `lua/commit.lua`;
- readers: `BatchStats.from_counters`, `producer.cluster`, the workers' batch control and the API's metrics.

The Lua scripts spell the names they write or read out; each one lists them in a comment as mirrored from here,
and `tests/test_stats.py` checks both against `Field` and `Family`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from crawlq import histogram

if TYPE_CHECKING:
    from crawlq.models import UrlResult

__all__ = ["Family", "Field", "counters"]


class Field(StrEnum):
    """A field of a batch's `meta` hash; the counters (up to `LATENCY_SUM_MS`) are in `crawlq:stats:all` too."""

    #: URLs in the batch (enqueue.lua and discover.lua add the new ones)
    TOTAL = "total"
    #: URLs with a final result
    DONE = "done"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: re-crawled pages found as they were (304, or the same content_sha256)
    UNCHANGED = "unchanged"
    #: fetch attempts of the URLs with a result
    ATTEMPTS = "attempts"
    #: decompressed body bytes of the final responses
    BYTES = "bytes"
    #: results with a latency (the divisor of `LATENCY_SUM_MS`)
    LATENCY_N = "latency_n"
    #: sum of the results' latencies in ms (HINCRBYFLOAT)
    LATENCY_SUM_MS = "latency_sum_ms"
    #: URLs added by link following (discover.lua)
    DISCOVERED = "discovered"
    #: times the batch was completed (commit.lua; more than 1 would be a bug)
    COMPLETIONS = "completions"
    #: the batch's priority (workers claim higher first)
    PRIORITY = "priority"
    #: epoch ms of the batch's first submit
    CREATED_AT = "created_at"
    #: epoch ms of its completion
    FINISHED_AT = "finished_at"
    #: epoch ms it was paused (absent when running)
    PAUSED_AT = "paused_at"
    #: epoch ms it was cancelled
    CANCELLED_AT = "cancelled_at"
    #: why some of its keys went missing (set by a reader, `Store.mark_lost`)
    LOST = "lost"


class Family(StrEnum):
    """A family of counters: one field per value, named `<prefix><value>`."""

    #: final HTTP status -> URLs
    STATUS = "s:"
    #: `ErrorClass` -> URLs
    ERROR = "e:"
    #: latency histogram bucket (`crawlq.histogram`) -> URLs
    LATENCY_BUCKET = "h:"
    #: link depth -> URLs found at that depth (discover.lua)
    DEPTH = "d:"

    def field(self, value: object) -> str:
        """The field that counts `value` (`Family.STATUS.field(404) == "s:404"`)."""
        return f"{self.value}{value}"

    def counts(self, raw: Mapping[str, str]) -> dict[str, str]:
        """The family's fields in a decoded `meta` hash, by value (the prefix removed), unconverted."""
        return {name[len(self.value) :]: value for name, value in raw.items() if name.startswith(self.value)}


def counters(results: Sequence[UrlResult]) -> tuple[dict[str, int], float]:
    """The counters `results` add (HINCRBY field -> increment, zero increments left out) and their latency sum
    in ms (HINCRBYFLOAT `latency_sum_ms`)."""
    counts: dict[str, int] = {Field.DONE: len(results)}
    succeeded = latency_n = size = attempts = 0
    latency_sum = 0.0

    def add(field: str) -> None:
        counts[field] = counts.get(field, 0) + 1

    for result in results:
        succeeded += result.ok
        if result.unchanged:
            add(Field.UNCHANGED)
        size += result.bytes
        attempts += result.attempts
        if result.status:
            add(Family.STATUS.field(result.status))
        if result.error:
            add(Family.ERROR.field(result.error))
        if result.latency_ms is not None:
            latency_n += 1
            latency_sum += round(result.latency_ms, 3)
            add(Family.LATENCY_BUCKET.field(histogram.bucket_of(result.latency_ms)))
    counts[Field.SUCCEEDED] = succeeded
    counts[Field.FAILED] = len(results) - succeeded
    counts[Field.LATENCY_N] = latency_n
    counts[Field.BYTES] = size
    counts[Field.ATTEMPTS] = attempts
    return {str(field): by for field, by in counts.items() if by}, latency_sum
