"""The job unit: an arq job carries a chunk of URL entries; this module builds its id and payload."""

from __future__ import annotations

import os
from dataclasses import dataclass

from crawlq.arq_door import job_payload as arq_payload

__all__ = ["CRAWL_FUNCTION", "Deferral", "Discovery", "Entry", "job_payload", "new_job_id"]

CRAWL_FUNCTION = "crawl"  #: the name of the arq function that workers register


@dataclass(slots=True, frozen=True)
class Entry:
    """One URL inside a job. `attempts` counts the fetch attempts already made for it; `depth` is how many
    links away from a submitted URL it was found (0: submitted; sent only when above 0)."""

    url_id: str
    url: str
    attempts: int = 0
    depth: int = 0

    def to_wire(self) -> list[object]:
        if self.depth:
            return [self.url_id, self.url, self.attempts, self.depth]
        return [self.url_id, self.url, self.attempts]

    @classmethod
    def from_wire(cls, raw: list[object]) -> Entry:
        url_id, url, attempts = raw[:3]
        depth = raw[3] if len(raw) > 3 else 0
        return cls(str(url_id), str(url), int(attempts), int(depth))  # type: ignore[call-overload]


@dataclass(slots=True)
class Deferral:
    """URLs handed to a new job that may not start before `run_at_ms` (a retry, a cooldown, a hand-back)."""

    entries: list[Entry]
    run_at_ms: int


@dataclass(slots=True)
class Discovery:
    """The in-scope links found on one page of a batch that follows links, as entries of depth page + 1."""

    parent_id: str  #: the url id of the page they were found on
    entries: list[Entry]

    @property
    def depth(self) -> int:
        return self.entries[0].depth if self.entries else 0


def new_job_id(batch: str) -> str:
    return f"{batch}:{os.urandom(8).hex()}"


def job_payload(batch: str, entries: list[Entry], enqueue_ms: int) -> bytes:
    """arq's job format ({t, f, a, k, et}) in msgpack; workers run `crawl(ctx, batch, entries)`."""
    args = (batch, [entry.to_wire() for entry in entries])
    return arq_payload(CRAWL_FUNCTION, args, enqueue_ms)
