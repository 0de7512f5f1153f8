"""The arq job: `crawl(ctx, batch, entries)` runs a chunk of URLs and commits their outcomes.

A job whose previous run crashed its worker (`job_try > 1`) does not fetch: it splits into one job
per URL; a single URL on a later try runs alone in its worker. So a poison URL exhausts only its own
tries, and no innocent URL shares its crashes twice. Outcomes are committed in groups (every
`FLUSH_S` or `FLUSH_N`), and the last commit also closes the job in the batch's job table.

A running job's loop sleeps until something needs it: the first outcome since the last commit, a
commit falling due (only while outcomes wait for one), the end of its URLs, or a drain's hand-back
deadline. It never wakes on a timer while nothing changes, so a worker whose fetches wait on slow
servers uses next to no CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import ResponseError

from crawlq.connection import describe
from crawlq.jobs import Deferral, Entry
from crawlq.memory import is_out_of_memory, out_of_memory_message
from crawlq.models import UrlResult, now_ms
from crawlq.store import CommitOutcome
from workers.batches import JobContext
from workers.engine import Outcome
from workers.events import wait_event
from workers.state import WorkerState

__all__ = ["crawl"]

logger = logging.getLogger("crawlq.worker")
FLUSH_S = 0.5
FLUSH_N = 500
FLUSH_SLACK_S = 0.001  #: a commit this close to due is made now rather than after one more, tiny sleep
OUT_OF_MEMORY_BACKOFF_S = 0.1  #: first pause before retrying a commit that a full Redis refused
OUT_OF_MEMORY_BACKOFF_MAX_S = 2.0


async def crawl(ctx: dict[str, Any], batch: str, raw_entries: list[list[Any]]) -> int:
    state: WorkerState = ctx["state"]
    job_id: str = ctx["job_id"]
    state.claimed.discard(job_id)
    entries = [Entry.from_wire(raw) for raw in raw_entries]
    state.chunk_estimate = float(max(1, len(entries)))  # jobs of one batch have one size; follow it at once
    owned = await state.store.owned_open_ids(batch, job_id, [e.url_id for e in entries])
    entries = [e for e in entries if e.url_id in owned]
    assert state.batches is not None
    job = await state.batches.job(batch, entries)
    if ctx["job_try"] > 1 and entries:
        return await _run_isolated(state, batch, job_id, entries, job)
    return await _run(state, batch, job_id, entries, job)


async def _run_isolated(state: WorkerState, batch: str, job_id: str, entries: list[Entry], job: JobContext) -> int:
    """A job whose previous run crashed its worker runs alone here (nothing else running or claimed), so
    if it crashes the worker again it uses up no other job's tries. With several URLs it only splits
    into single-URL jobs; a single URL is fetched."""
    async with state.isolation:
        state.isolating = True
        try:
            await state.settle()
            if len(entries) > 1:
                logger.warning("job %s crashed a worker before; splitting its %d URLs", job_id, len(entries))
                now = now_ms()
                await state.store.commit(batch, deferrals=[Deferral([e], now) for e in entries], done_job=job_id)
                return 0
            return await _run(state, batch, job_id, entries, job)
        finally:
            state.isolating = False


async def _run(state: WorkerState, batch: str, job_id: str, entries: list[Entry], job: JobContext) -> int:
    engine = state.engine
    deadline = time.monotonic() + state.settings.chunk_max_s
    finished: list[tuple[Entry, asyncio.Task[Outcome]]] = []
    wake = asyncio.Event()
    running: dict[asyncio.Task[Outcome], Entry] = {}
    results: list[tuple[str, UrlResult]] = []
    deferrals: list[Deferral] = []

    def on_done(task: asyncio.Task[Outcome]) -> None:
        finished.append((running.pop(task), task))
        state.finished(1)
        first = len(finished) == 1 and not results and not deferrals  # the loop may be sleeping without a timer
        if first or not running or len(finished) >= FLUSH_N:  # otherwise it wakes when the commit is due
            wake.set()

    for entry in entries:
        task = asyncio.create_task(engine.process(entry, deadline, job.request_for(entry)))
        running[task] = entry
        task.add_done_callback(on_done)
    engine.pending += len(entries)
    last_flush = time.monotonic()
    committed = 0
    state.job_wakes.add(wake)
    try:
        while running or finished:
            if running and len(finished) < FLUSH_N:
                wake.clear()
                sleep_s = _sleep_s(state, last_flush, bool(finished or results or deferrals))
                if sleep_s is None or sleep_s > 0:
                    await wait_event(wake, sleep_s)
            _collect(finished, results, deferrals, job)
            if state.drain_deadline is not None and time.monotonic() >= state.drain_deadline and running:
                await _hand_back(running, finished, deferrals)
            full = len(results) + len(deferrals) >= FLUSH_N
            if (results or deferrals) and running and (full or _flush_due(last_flush)):
                committed += await _commit(state, batch, results, deferrals)
                last_flush = time.monotonic()
    finally:
        state.job_wakes.discard(wake)
        for task in list(running):
            task.cancel()  # only when leaving by an exception; on_done still counts them as finished
    committed += await _commit(state, batch, results, deferrals, done_job=job_id)
    return committed


def _sleep_s(state: WorkerState, last_flush: float, unflushed: bool) -> float | None:
    """How long the job loop may sleep unless woken: until the next commit is due (only if outcomes
    wait for one) or the drain's hand-back deadline; None: until an outcome arrives or a drain begins."""
    due = [last_flush + FLUSH_S] if unflushed else []
    if state.drain_deadline is not None:
        due.append(state.drain_deadline)
    if not due:
        return None
    return max(0.0, min(due) - time.monotonic())


def _flush_due(last_flush: float) -> bool:
    """Whether `FLUSH_S` has passed since the last commit (with `FLUSH_SLACK_S`: a timer may fire early)."""
    return time.monotonic() - last_flush >= FLUSH_S - FLUSH_SLACK_S


def _collect(
    finished: list[tuple[Entry, asyncio.Task[Outcome]]],
    results: list[tuple[str, UrlResult]],
    deferrals: list[Deferral],
    job: JobContext,
) -> None:
    """Move finished tasks' outcomes to `results` / `deferrals` (re-crawled pages marked `unchanged`)."""
    while finished:
        entry, task = finished.pop()
        if task.cancelled():
            deferrals.append(Deferral([entry], now_ms()))
            continue
        error = task.exception()
        if error is not None:
            logger.warning("URL %s failed inside the worker; handing it back", entry.url, exc_info=error)
            deferrals.append(Deferral([entry], now_ms() + 1000))
            continue
        outcome = task.result()
        if isinstance(outcome, UrlResult):
            results.append((entry.url_id, job.finish(entry.url_id, outcome)))
        else:
            deferrals.append(outcome)


async def _hand_back(
    running: dict[asyncio.Task[Outcome], Entry],
    finished: list[tuple[Entry, asyncio.Task[Outcome]]],
    deferrals: list[Deferral],
) -> None:
    """Shutdown grace is over: cancel what is still in flight; those URLs go to a new job unchanged."""
    tasks = list(running)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _commit(
    state: WorkerState,
    batch: str,
    results: list[tuple[str, UrlResult]],
    deferrals: list[Deferral],
    done_job: str = "",
) -> int:
    merged = _merge(deferrals)
    outcome = await _commit_when_room(state, batch, results, merged, done_job)
    if state.engine.draining.is_set():
        state.handed_back += sum(len(deferral.entries) for deferral in merged)
    if not outcome.known_batch:
        logger.warning("batch %s is unknown to Redis (expired or lost); dropped %d results", batch, len(results))
    state.urls_done += len(results)
    results.clear()
    deferrals.clear()
    return outcome.added


async def _commit_when_room(
    state: WorkerState, batch: str, results: list[tuple[str, UrlResult]], merged: list[Deferral], done_job: str
) -> CommitOutcome:
    """`Store.commit`, retried with backoff while Redis is out of memory: a full Redis (`noeviction`)
    refuses the script before its first write, so the retry records everything once, and the job
    neither fails nor spends a try. The worker logs the episode once when it starts and once when it ends."""
    pause_s = OUT_OF_MEMORY_BACKOFF_S
    while True:
        try:
            outcome = await state.store.commit(batch, results, merged, done_job=done_job)
        except ResponseError as exc:
            if not is_out_of_memory(exc):
                raise
            if state.out_of_memory_since is None:
                state.out_of_memory_since = time.monotonic()
                message = await out_of_memory_message(state.redis, describe(state.settings.redis_url))
                logger.warning("%s; holding results and retrying commits until it has room", message)
            await asyncio.sleep(pause_s)
            pause_s = min(OUT_OF_MEMORY_BACKOFF_MAX_S, pause_s * 2)
            continue
        if state.out_of_memory_since is not None:
            waited_s = time.monotonic() - state.out_of_memory_since
            state.out_of_memory_since = None
            logger.info("Redis has room again: commits go on after %.1f s", waited_s)
        return outcome


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
