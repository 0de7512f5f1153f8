"""What one worker process owns: its Redis pool, store, committer, fetcher, gate, robots cache and engine."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from arq.connections import ArqRedis

from crawlq.bodies import open_body_store
from crawlq.models import now_ms
from crawlq.settings import Settings
from crawlq.store import Store
from workers.batches import BatchContexts
from workers.commits import Committer
from workers.content import keep_heap_pad
from workers.control import BatchControl
from workers.engine import Engine
from workers.fetcher import Fetcher
from workers.gate import HostGate
from workers.robots import RobotsCache

__all__ = ["BACKLOG_CHUNKS", "BACKLOG_MAX_FACTOR", "WorkerState", "new_worker_id"]

BACKLOG_CHUNKS = 1  #: jobs' worth of URLs a worker holds beyond its concurrency
BACKLOG_MAX_FACTOR = 4  #: at most this many times its concurrency (plus a job) held, stalled URLs included


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"


@dataclass
class WorkerState:
    settings: Settings
    redis: ArqRedis
    worker_id: str
    store: Store
    fetcher: Fetcher
    gate: HostGate
    engine: Engine
    committer: Committer
    started_at: int = field(default_factory=now_ms)
    claimed: set[str] = field(default_factory=set)  #: jobs claimed whose URLs are not yet registered
    chunk_estimate: float = 0.0  #: URLs per job, from the last job started
    drain_deadline: float | None = None  #: monotonic time by which in-flight URLs are handed back
    isolation: asyncio.Lock = field(default_factory=asyncio.Lock)  #: one retried (suspect) job at a time
    isolating: bool = False  #: a suspect job runs alone: claim nothing meanwhile
    suspect: str | None = None  #: a claimed suspect job that has not finished: claim nothing meanwhile
    room: asyncio.Event = field(default_factory=asyncio.Event)  #: set when the backlog falls below its limit
    settled: asyncio.Event = field(default_factory=asyncio.Event)  #: set when nothing is pending or claimed
    job_wakes: set[asyncio.Event] = field(default_factory=set)  #: each running job loop's wake-up; a drain sets them
    batches: BatchContexts | None = None  #: each batch's options, read once
    control: BatchControl | None = None  #: which batches are paused or cancelled, and their priorities
    held: Counter[str] = field(default_factory=Counter)  #: batch -> URLs of running jobs without an outcome

    def __post_init__(self) -> None:
        if self.batches is None:
            self.batches = BatchContexts(self.store)

    @classmethod
    async def start(cls, settings: Settings, redis: ArqRedis, worker_id: str) -> WorkerState:
        if settings.extract_content:
            keep_heap_pad()  # the parser's pools stay mapped between pages
        fetcher = Fetcher(settings)
        fetcher.bodies = open_body_store(settings, redis)
        await fetcher.start()
        gate = HostGate(redis, settings, worker_id)
        gate.start()
        engine = Engine(settings, fetcher, gate, RobotsCache(redis, settings, fetcher, gate))
        store = Store(redis, settings)
        committer = Committer(store, lambda: engine.pending == 0, engine.draining.is_set)
        committer.start()
        control = BatchControl(redis, on_rules=engine.set_runtime_rules)
        control.start()
        engine.halted = control.halted
        engine.priority_of = control.priority
        state = cls(settings, redis, worker_id, store, fetcher, gate, engine, committer, control=control)
        state.chunk_estimate = float(settings.chunk_size)
        gate.on_stall = state._notify  # URLs now waiting on a full or delayed host may leave room to claim
        control.on_refresh = state._notify  # a batch waiting to be claimed may now outrank those held here
        return state

    @property
    def urls_done(self) -> int:
        return self.committer.urls_done

    @property
    def handed_back(self) -> int:
        """URLs put back in the queue while draining (SIGTERM)."""
        return self.committer.handed_back

    async def close(self) -> None:
        if self.control is not None:
            await self.control.close()
        await self.gate.close()
        await self.committer.close()
        await self.fetcher.close()

    def backlog(self) -> float:
        return self.engine.pending + len(self.claimed) * self.chunk_estimate

    def backlog_limit(self) -> float:
        """URLs a worker holds (running, waiting for a slot, or in claimed jobs) that a free fetch slot could
        serve: its concurrency plus `BACKLOG_CHUNKS` jobs, so that slots never wait for a claim round trip."""
        return self.settings.concurrency + BACKLOG_CHUNKS * self.chunk_estimate

    def backlog_cap(self) -> float:
        """URLs a worker holds at most, stalled ones (full, delayed or cooling hosts) included."""
        return BACKLOG_MAX_FACTOR * self.settings.concurrency + BACKLOG_CHUNKS * self.chunk_estimate

    def backlog_room(self) -> float:
        """URLs to claim now: while the URLs held leave fetch slots that none of them can use (they wait
        for full or delayed hosts), more are claimed, up to `backlog_cap`; but the cap never keeps out a
        batch of a higher priority than every batch held here (`outranked`)."""
        held = self.backlog()
        room = self.backlog_limit() - (held - self.engine.stalled())
        return room if self.outranked() else min(room, self.backlog_cap() - held)

    def outranked(self) -> bool:
        """Whether a batch waiting to be claimed has a higher priority than every batch with URLs held here."""
        control = self.control
        if control is None or control.best_queued is None or not self.held:
            return False
        return control.best_queued > max(control.priority(batch) for batch in self.held)

    def hold(self, batch: str, count: int) -> None:
        """`count` URLs of `batch` start in a running job."""
        self.engine.pending += count
        self.held[batch] += count

    def backlog_full(self) -> bool:
        if self.isolating or self.isolation.locked() or self.suspect is not None:
            return True
        return self.backlog_room() <= 0

    def finished(self, count: int, batch: str = "") -> None:
        """`count` URLs of running jobs (of `batch`) have their outcome: wake the poll loop if there is room now."""
        self.engine.pending -= count
        left = self.held[batch] - count
        if left > 0:
            self.held[batch] = left
        else:
            self.held.pop(batch, None)
        self._notify()

    def job_ended(self, job_id: str) -> None:
        """A claimed job's task is over: it no longer holds back claims or a job that must run alone."""
        self.claimed.discard(job_id)
        if self.suspect == job_id:
            self.suspect = None
        self._notify()

    def _notify(self) -> None:
        if not self.room.is_set() and not self.backlog_full():
            self.room.set()
        if self.engine.pending <= 0 and not self.claimed:
            self.settled.set()

    async def settle(self) -> None:
        """Wait until no URL of another job is pending and no claimed job waits to start."""
        while self.engine.pending > 0 or self.claimed:
            self.settled.clear()
            await self.settled.wait()

    def drain(self) -> None:
        self.engine.draining.set()
        self.gate.abandon_waiters()
        self.drain_deadline = time.monotonic() + max(0.5, self.settings.shutdown_grace_s - 1.5)
        for wake in self.job_wakes:
            wake.set()  # each job loop now sleeps only until the hand-back deadline
