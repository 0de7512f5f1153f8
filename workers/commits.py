"""The worker's result committer: one flush for every job running here, so a commit's fixed cost (the
batch and overall counters, one HINCRBY per field) is paid per flush for the whole worker, not per job.

Jobs hand in outcomes as their URLs finish (`add`) and, when every URL of theirs has an outcome, ask to be
closed (`close`), which returns once their last outcomes and the removal of their row from the batch's
job table are in Redis (one `commit.lua` call per batch per flush). A flush runs `FLUSH_S` after the
previous one, at once when `FLUSH_N` outcomes wait, and at once when a job closes while the worker has
no other URL running (the end of a batch is not held back). Nothing due: the loop sleeps on an event.
Links found on pages (a batch that follows links) are added to their batch (`Store.discover`) in the
same flush, just before the pages' results.

A failed flush keeps its outcomes for the next one (a commit is idempotent: first write wins); the jobs
that asked to be closed in it get the error, so arq runs them again (their recorded URLs are skipped).
A full Redis (an OOM reply: the script was refused before its first write) fails no job: everything is
kept and retried with a doubling pause, and the episode is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from crawlq.connection import describe
from crawlq.jobs import Deferral, Discovery
from crawlq.memory import is_out_of_memory, out_of_memory_message
from crawlq.models import UrlResult
from crawlq.store import Store
from workers.events import wait_event

__all__ = ["FLUSH_N", "FLUSH_S", "Committer"]

logger = logging.getLogger("crawlq.worker")
FLUSH_S = 0.5  #: outcomes wait at most about this long before they are committed
FLUSH_N = 500  #: this many waiting outcomes are committed at once
RETRY_S = 0.5  #: after a failed flush, try again this soon
OUT_OF_MEMORY_BACKOFF_S = 0.1  #: first pause before retrying a flush that a full Redis refused
OUT_OF_MEMORY_BACKOFF_MAX_S = 2.0


@dataclass(slots=True)
class _Pending:
    """What one batch has waiting for the next flush."""

    results: list[tuple[str, UrlResult]] = field(default_factory=list)
    deferrals: list[Deferral] = field(default_factory=list)
    closing: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)
    found: list[Discovery] = field(default_factory=list)  #: links added before `results` are committed

    def size(self) -> int:
        return len(self.results) + len(self.deferrals)

    def absorb(self, later: _Pending) -> None:
        self.results += later.results
        self.deferrals += later.deferrals
        self.closing += later.closing
        self.found += later.found


class Committer:
    def __init__(self, store: Store, idle: Callable[[], bool], draining: Callable[[], bool]) -> None:
        self.store = store
        self.idle = idle  #: whether no URL runs on this worker (a closing job is then committed at once)
        self.draining = draining  #: whether the worker drains (its deferrals are URLs handed back)
        self.urls_done = 0
        self.urls_found = 0  #: URLs this worker added to their batches by following links
        self.handed_back = 0  #: URLs put back in the queue while draining (SIGTERM)
        self.out_of_memory_since: float | None = None  #: monotonic time a full Redis first refused a flush
        self._pause_s = OUT_OF_MEMORY_BACKOFF_S
        self.flushes = 0
        self._pending: dict[str, _Pending] = {}
        self._waiting = 0
        self._due = asyncio.Event()  #: something waits
        self._now = asyncio.Event()  #: something must not wait for the timer
        self._last_flush = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="crawlq-committer")

    async def close(self) -> None:
        """Commit what waits (best effort: a job left open runs again), then stop."""
        if self._pending:
            with contextlib.suppress(Exception):
                await self._flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def add(
        self,
        batch: str,
        result: tuple[str, UrlResult] | None,
        deferral: Deferral | None,
        found: Discovery | None = None,
    ) -> None:
        """Hand in one URL's outcome; `found` (with its result) are the links its page adds to the batch."""
        pending = self._pending.setdefault(batch, _Pending())
        if result is not None:
            pending.results.append(result)
        if found is not None:
            pending.found.append(found)
        if deferral is not None:
            pending.deferrals.append(deferral)
        self._waiting += 1
        self._due.set()
        if self._waiting >= FLUSH_N:
            self._now.set()

    async def close_job(self, batch: str, job_id: str) -> None:
        """Returns once every outcome handed in before and the job's closure are committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(batch, _Pending()).closing.append((job_id, future))
        self._due.set()
        if self.idle():
            self._now.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._due.wait()
            wait_s = self._last_flush + FLUSH_S - time.monotonic()
            if wait_s > 0:
                await wait_event(self._now, wait_s)
            self._due.clear()
            self._now.clear()
            try:
                await self._flush()
            except Exception as exc:
                if is_out_of_memory(exc):
                    await self._out_of_memory()
                else:
                    logger.warning("result commit failed; retrying", exc_info=True)
                    await asyncio.sleep(RETRY_S)

    async def _out_of_memory(self) -> None:
        if self.out_of_memory_since is None:
            self.out_of_memory_since = time.monotonic()
            message = await out_of_memory_message(self.store.redis, describe(self.store.settings.redis_url))
            logger.warning("%s; holding results and retrying commits until it has room", message)
        await asyncio.sleep(self._pause_s)
        self._pause_s = min(OUT_OF_MEMORY_BACKOFF_MAX_S, self._pause_s * 2)

    async def _flush(self) -> None:
        taken, self._pending, self._waiting = self._pending, {}, 0
        self._last_flush = time.monotonic()
        self.flushes += 1
        failed: Exception | None = None
        for batch, pending in taken.items():
            try:
                await self._commit(batch, pending)
            except Exception as exc:  # kept for the next flush; the jobs closing now run again (not for OOM)
                failed = exc
                if not is_out_of_memory(exc):
                    for _, future in pending.closing:
                        if not future.done():
                            future.set_exception(exc)
                    pending.closing = []
                self._keep(batch, pending)
        if failed is not None:
            raise failed
        if self.out_of_memory_since is not None:
            logger.info("Redis has room again: commits go on after %.1f s", time.monotonic() - self.out_of_memory_since)
            self.out_of_memory_since = None
            self._pause_s = OUT_OF_MEMORY_BACKOFF_S

    def _keep(self, batch: str, pending: _Pending) -> None:
        later = self._pending.get(batch)
        self._pending[batch] = pending
        if later is not None:
            pending.absorb(later)
        self._waiting += pending.size()
        self._due.set()

    async def _commit(self, batch: str, pending: _Pending) -> None:
        done_jobs = ",".join(job_id for job_id, _ in pending.closing)
        if pending.found:  # first: the batch's total grows before these pages' results count as done
            self.urls_found += await self.store.discover(batch, pending.found)
            pending.found = []
        outcome = await self.store.commit(batch, pending.results, _merge(pending.deferrals), done_job=done_jobs)
        if not outcome.known_batch:
            logger.warning(
                "batch %s is unknown to Redis (expired or lost); dropped %d results", batch, len(pending.results)
            )
        self.urls_done += len(pending.results)
        if self.draining():
            self.handed_back += sum(len(deferral.entries) for deferral in pending.deferrals)
        for _, future in pending.closing:
            if not future.done():
                future.set_result(None)


def _merge(deferrals: list[Deferral]) -> list[Deferral]:
    """Deferrals due within the same 100 ms share one job."""
    groups: dict[int, Deferral] = {}
    for deferral in deferrals:
        slot = deferral.run_at_ms // 100
        if slot in groups:
            groups[slot].entries.extend(deferral.entries)
            groups[slot].run_at_ms = max(groups[slot].run_at_ms, deferral.run_at_ms)
        else:
            groups[slot] = Deferral(list(deferral.entries), deferral.run_at_ms)
    return list(groups.values())
