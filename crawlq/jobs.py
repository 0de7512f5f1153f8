"""The job unit: an arq job carries a chunk of URL entries; this module builds its id and payload."""

from __future__ import annotations

import os
from dataclasses import dataclass

from crawlq.arq_door import job_payload as arq_payload

__all__ = ["CRAWL_FUNCTION", "Deferral", "Entry", "job_payload", "new_job_id"]

CRAWL_FUNCTION = "crawl"  #: the name of the arq function that workers register


@dataclass(slots=True, frozen=True)
class Entry:
    """One URL inside a job. `attempts` counts the fetch attempts already made for it."""

    url_id: str
    url: str
    attempts: int = 0

    def to_wire(self) -> list[object]:
        return [self.url_id, self.url, self.attempts]

    @classmethod
    def from_wire(cls, raw: list[object]) -> Entry:
        url_id, url, attempts = raw
        return cls(str(url_id), str(url), int(attempts))  # type: ignore[call-overload]


@dataclass(slots=True)
class Deferral:
    """URLs handed to a new job that may not start before `run_at_ms` (a retry, a cooldown, a hand-back)."""

    entries: list[Entry]
    run_at_ms: int


def new_job_id(batch: str) -> str:
    return f"{batch}:{os.urandom(8).hex()}"


def job_payload(batch: str, entries: list[Entry], enqueue_ms: int) -> bytes:
    """arq's job format ({t, f, a, k, et}) in msgpack; workers run `crawl(ctx, batch, entries)`."""
    args = (batch, [entry.to_wire() for entry in entries])
    return arq_payload(CRAWL_FUNCTION, args, enqueue_ms)
