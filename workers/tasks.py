"""The arq job: `crawl(ctx, batch, entries)` runs a chunk of URLs and commits their outcomes.

A job whose previous run crashed its worker (`job_try > 1`) does not fetch: it splits into one job
per URL; a single URL on a later try runs alone in its worker. So a poison URL exhausts only its own
tries, and no innocent URL shares its crashes twice. Outcomes go to the worker's committer
(`workers.commits`), which commits those of every job running here together and closes the jobs
whose URLs are all done. A page of a batch that follows links hands in the links it adds with its
outcome; the committer adds them to the batch before it commits the page's result.

A running job's loop sleeps until its last URL has an outcome, or until a drain's hand-back deadline;
it never wakes on a timer while nothing changes, so a worker whose fetches wait on slow servers uses next
to no CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from crawlq.jobs import Deferral, Discovery, Entry
from crawlq.models import UrlResult, now_ms
from workers.batches import JobContext
from workers.engine import Outcome
from workers.events import wait_event
from workers.state import WorkerState

__all__ = ["crawl"]

logger = logging.getLogger("crawlq.worker")


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
    """Run every URL of the job; each outcome goes to the worker's committer as it comes, and the job
    returns once its last outcomes and its closure are committed (`workers.commits`)."""
    committer = state.committer
    deadline = time.monotonic() + state.settings.chunk_max_s
    wake = asyncio.Event()  #: the last URL has its outcome, or a drain began
    running: dict[asyncio.Task[Outcome], Entry] = {}
    found: dict[str, Discovery] = {}  #: url id -> the links its page adds (a batch that follows links)
    results = 0

    def on_done(task: asyncio.Task[Outcome]) -> None:
        nonlocal results
        entry = running.pop(task)
        outcome = _outcome(entry, task)
        if isinstance(outcome, UrlResult):
            results += 1
            result = (entry.url_id, job.finish(entry.url_id, outcome))
            committer.add(batch, result, None, found.pop(entry.url_id, None))
        else:
            committer.add(batch, None, outcome)
        state.finished(1, batch)
        if not running:
            wake.set()

    for entry in entries:
        task = asyncio.create_task(_process(state, entry, deadline, job, found, batch))
        running[task] = entry
        task.add_done_callback(on_done)
    state.hold(batch, len(entries))
    state.job_wakes.add(wake)
    try:
        while running:
            wake.clear()
            sleep_s = _sleep_s(state)
            if sleep_s is None or sleep_s > 0:
                await wait_event(wake, sleep_s)
            if running and state.drain_deadline is not None and time.monotonic() >= state.drain_deadline:
                await _hand_back(running)
    finally:
        state.job_wakes.discard(wake)
        for task in list(running):
            task.cancel()  # only when leaving by an exception; on_done still hands their URLs back
    await committer.close_job(batch, job_id)
    return results


async def _process(
    state: WorkerState, entry: Entry, deadline: float, job: JobContext, found: dict[str, Discovery], batch: str
) -> Outcome:
    """One URL through the engine; a page's links become the `Discovery` its result is committed with."""
    outcome = await state.engine.process(entry, deadline, job.request_for(entry), batch)
    if isinstance(outcome, UrlResult) and outcome.links:
        links, outcome.links = outcome.links, None
        robots = state.engine.robots if state.settings.robots_enabled else None
        discovery = await job.found_on(entry, links, robots)
        if discovery is not None:
            found[entry.url_id] = discovery
    return outcome


def _sleep_s(state: WorkerState) -> float | None:
    """How long the job loop may sleep unless woken: until the drain's hand-back deadline; None: until
    its last URL has an outcome or a drain begins."""
    if state.drain_deadline is None:
        return None
    return max(0.0, state.drain_deadline - time.monotonic())


def _outcome(entry: Entry, task: asyncio.Task[Outcome]) -> Outcome:
    """A finished task's outcome; a cancelled or crashed one hands its URL back."""
    if task.cancelled():
        return Deferral([entry], now_ms())
    error = task.exception()
    if error is not None:
        logger.warning("URL %s failed inside the worker; handing it back", entry.url, exc_info=error)
        return Deferral([entry], now_ms() + 1000)
    return task.result()


async def _hand_back(running: dict[asyncio.Task[Outcome], Entry]) -> None:
    """Shutdown grace is over: cancel what is still in flight; those URLs go to a new job unchanged."""
    tasks = list(running)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
