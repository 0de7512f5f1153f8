"""The crawlq worker: an arq Worker tuned for chunked jobs, leases with heartbeats and graceful drains.

Differences from a stock arq worker, and why:
- the in-progress key is a short lease (`lease_s`) refreshed every `lease_s / 3` while a job runs, so a
  SIGKILLed worker's jobs run again after at most `lease_s`, however long a job may take;
- jobs are claimed only while the URLs held that a free fetch slot could serve are below `concurrency +
  chunk size`: URLs waiting for full, delayed or cooling hosts do not count, up to a hard cap of
  4 x concurrency + a chunk (`WorkerState.backlog_room`); claims happen at once when a finished URL
  makes room (`WorkerState.room`), not on the next poll tick;
- a queue with nothing to claim is looked at again after `poll_delay_s`, doubling with each empty pass
  up to `idle_poll_s` (few Redis commands at rest, and while every job waits on slow fetches: arq keeps
  running jobs in the queue, so a busy worker's reads never come back empty), and a submit wakes workers
  at once through a pub/sub message (`keys.wake`), so pick-up stays instant;
- SIGTERM drains: no new jobs or attempts, in-flight fetches get `shutdown_grace_s`, the rest is handed
  back to the queue, then the process exits 0;
- a per-worker heartbeat key and a per-worker arq health key (arq's shared one is deleted by any exit);
- a Redis outage is logged when it starts and when it ends; commands retry for `redis_retry_window_s`
  from its first failure, and past that window the process exits 1 for its supervisor to restart it
  (its jobs' leases lapse and they run again elsewhere);
- a full Redis (OOM reply) pauses claiming and commits until memory frees; it never fails a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
from importlib.resources import files
from typing import Any

from arq import Worker
from arq.worker import func
from redis.exceptions import ResponseError

from crawlq import keys
from crawlq.arq_door import jobs_started, start_job
from crawlq.codec import pack, unpack
from crawlq.connection import describe, redis_settings
from crawlq.errors import ConfigError
from crawlq.heartbeats import Heartbeat, RateWindow, publish
from crawlq.jobs import CRAWL_FUNCTION
from crawlq.memory import is_out_of_memory, out_of_memory_message
from crawlq.models import now_ms
from crawlq.outage import LOST_CONNECTION, Outage, retry_checkouts
from crawlq.reconcile import reconcile_all
from crawlq.settings import Settings
from workers.events import wait_event
from workers.state import WorkerState, new_worker_id
from workers.tasks import crawl

__all__ = ["CrawlWorker", "settings_summary"]

logger = logging.getLogger("crawlq.worker")
POLL_RETRY_S = 0.2  #: the pause after a poll pass that lost Redis
POLL_TICK_S = 0.0005  #: arq's own sleep between poll passes; the real waiting is in `_poll_iteration`
OUT_OF_MEMORY_PAUSE_S = 1.0  #: a full Redis refused a claim: try again after this


def settings_summary(settings: Settings) -> str:
    """The settings an operator checks first, for the start line of the log."""
    return (
        f"Redis {describe(settings.redis_url)}, queue {settings.queue_name}, concurrency {settings.concurrency}, "
        f"per-host concurrency {settings.per_host_concurrency}, lease {settings.lease_s:g} s, "
        f"shutdown grace {settings.shutdown_grace_s:g} s, Redis retry window {settings.redis_retry_window_s:g} s, "
        f"robots {'on' if settings.robots_enabled else 'off'}, private addresses "
        f"{'allowed' if settings.allow_private else 'blocked'}"
    )


class CrawlWorker(Worker):
    def __init__(self, settings: Settings, *, burst: bool = False, worker_id: str | None = None) -> None:
        self.crawl_settings = settings
        self.worker_id = worker_id or new_worker_id()
        self._pages_rate = RateWindow(60.0)  #: the heartbeat's pages/s over the last minute
        self.state: WorkerState | None = None
        self._background: list[asyncio.Task[None]] = []
        self._empty_polls = 0  #: passes in a row that claimed nothing
        self._woken = asyncio.Event()
        self.outage = Outage(describe(settings.redis_url), settings.redis_retry_window_s, logger.warning)
        self._out_of_memory_logged = False
        job_timeout = int(settings.chunk_max_s + settings.fetch_timeout_s + 60)
        super().__init__(
            functions=[func(crawl, name=CRAWL_FUNCTION, max_tries=settings.max_job_tries, timeout=job_timeout)],
            queue_name=settings.queue_name,
            redis_settings=redis_settings(settings, outage=self.outage),
            burst=burst,
            max_jobs=10_000,
            queue_read_limit=1,  # arq's own read only detects that a job is ready; claim.lua reads more
            job_timeout=job_timeout,
            poll_delay=settings.poll_delay_s if burst else POLL_TICK_S,
            keep_result=86_400,
            job_serializer=pack,
            job_deserializer=unpack,
            on_startup=self._startup,
            on_shutdown=self._shutdown,
            job_completion_wait=math.ceil(settings.shutdown_grace_s),
            health_check_key=f"{settings.queue_name}:health-check:{self.worker_id}",
            health_check_interval=settings.heartbeat_interval_s,
            expires_extra_ms=settings.job_expires_s * 1000,
            log_results=False,
        )
        self.in_progress_timeout_s = settings.lease_s

    # ---- lifecycle
    async def _startup(self, ctx: dict[str, Any]) -> None:
        retry_checkouts(ctx["redis"])
        self.state = await WorkerState.start(self.crawl_settings, ctx["redis"], self.worker_id)
        self._claim = self.state.redis.register_script((files("workers") / "lua" / "claim.lua").read_text())
        self._claim_keys = [self.queue_name, keys.SCHED, keys.PAUSED, keys.CLAIMED, keys.ACTIVE, keys.SCHED_TURN]
        ctx["state"] = self.state
        self._serve_metrics(self.state)
        loops = (self._heartbeat_loop, self._lease_loop, self._reconcile_loop, self._wake_loop, self._outage_loop)
        for loop in loops:
            self._background.append(asyncio.create_task(loop()))
        logger.info("worker %s started: %s", self.worker_id, settings_summary(self.crawl_settings))

    def _serve_metrics(self, state: WorkerState) -> None:
        """This worker's /metrics on `CRAWLQ_METRICS_PORT`, if set (workers/metrics.py)."""
        host, port = self.crawl_settings.metrics_host, self.crawl_settings.metrics_port
        if port:
            try:
                state.engine.metrics.serve(host, port)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {host}:{port} (CRAWLQ_METRICS_PORT): {exc}") from None
            logger.info("worker %s serves its metrics on http://%s:%d/metrics", self.worker_id, host, port)

    async def _shutdown(self, ctx: dict[str, Any]) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.state is not None:
            with contextlib.suppress(Exception):
                await self.state.redis.delete(keys.worker(self.worker_id))
            self.state.engine.metrics.stop()
            await self.state.close()
            logger.info(
                "worker %s stopped: %d URLs done, %d handed back to the queue",
                self.worker_id,
                self.state.urls_done,
                self.state.handed_back,
            )

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        if self.state is not None:
            logger.info(
                "worker %s got %s: draining; %d URLs in flight get up to %g s, then the rest goes back to the queue",
                self.worker_id,
                signal.Signals(signum).name,
                self.state.engine.pending,
                self.crawl_settings.shutdown_grace_s,
            )
            self.state.drain()
        super().handle_sig_wait_for_completion(signum)

    async def _outage_loop(self) -> None:
        """Exit 1 once Redis has been unreachable for longer than `redis_retry_window_s`: nothing can be
        saved without it, and its jobs run again elsewhere once their leases lapse."""
        while True:
            await asyncio.sleep(0.2)
            if self.outage.expired():
                logger.error("worker %s: %s; exiting 1", self.worker_id, self.outage.give_up_message())
                logging.shutdown()
                os._exit(1)

    # ---- polling
    async def _poll_iteration(self) -> None:
        """One pass of arq's loop (`_poll_once`) that a lost connection does not end.

        Commands, and taking a connection from the pool (`retry_checkouts`), retry within the outage
        window, so this is a safety net: a pass that still loses its connection is abandoned and the next
        begins after a short pause; the outage loop ends the process once Redis stays away past the window.
        A job whose task failed this way keeps its lease until it lapses and then runs again (first write
        wins)."""
        try:
            await self._poll_once()
        except LOST_CONNECTION as exc:
            logger.debug("worker %s: a poll pass lost Redis", self.worker_id, exc_info=True)
            self.outage.start(exc)
            await asyncio.sleep(POLL_RETRY_S)

    async def _poll_once(self) -> None:
        """One pass of arq's loop, which sleeps only `POLL_TICK_S` between passes (the poll delay in burst
        mode). The waiting is here: while the backlog is full, until a URL finishes or a job ends
        (`WorkerState.room`); when the pass claimed nothing, until a submit wakes us or the poll delay
        passes, doubled for each empty pass in a row up to the idle delay."""
        state = self.state
        if state is None:
            await super()._poll_iteration()
            return
        settings = self.crawl_settings
        draining = state.engine.draining.is_set()
        if not draining and not self.burst and state.backlog_full():
            state.room.clear()
            if state.backlog_full():  # `room` is set on every change that can end this; the timeout is a backstop
                await wait_event(state.room, settings.idle_poll_s)
        self.allow_pick_jobs = not draining and not state.backlog_full()
        self._woken.clear()
        started = jobs_started(self)
        await super()._poll_iteration()
        if self.burst:
            return
        if draining:
            await asyncio.sleep(settings.idle_poll_s)  # no claims; arq's own shutdown does not need this loop
            return
        if jobs_started(self) != started or not self.allow_pick_jobs:
            self._empty_polls = 0
            return
        delay = min(settings.idle_poll_s, settings.poll_delay_s * 2 ** min(self._empty_polls, 20))
        self._empty_polls += 1
        if await wait_event(self._woken, delay):
            self._empty_polls = 0

    async def _wake_loop(self) -> None:
        """Listen for submit notifications and batch control messages (pause, resume, cancel); reconnect
        with backoff if Redis goes away."""
        assert self.state is not None
        control = self.state.control
        while True:
            pubsub = self.state.redis.pubsub()
            try:
                await pubsub.subscribe(keys.wake(self.queue_name), keys.CONTROL)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    if message.get("channel") == keys.CONTROL.encode() and control is not None:
                        control.poke()
                    else:
                        self._woken.set()
                        if control is not None:
                            control.poke()  # a new batch may outrank those held here (its priority)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim as many ready jobs as the backlog has room for, in one Lua call (`lua/claim.lua`),
        instead of arq's four round trips per id; `job_ids` (arq's read) only says whether any is ready."""
        state = self.state
        if state is None or not job_ids or state.backlog_full():
            return
        room = state.backlog_room()
        want = max(1, math.ceil(room / max(1.0, state.chunk_estimate)))
        lease_ms = int(self.in_progress_timeout_s * 1000)
        running = any(not task.done() for task in self.tasks.values())
        idle = "1" if not running and state.engine.pending == 0 and not state.claimed else "0"
        args: list[int | str] = [want, lease_ms, state.settings.queue_read_limit, idle]
        args += [keys.ARQ_IN_PROGRESS_PREFIX, keys.ARQ_RETRY_PREFIX, keys.BATCH_PREFIX]
        try:
            reply = await self._claim(keys=self._claim_keys, args=args)
        except ResponseError as exc:
            if not is_out_of_memory(exc):
                raise
            await self._out_of_memory(exc)
            return
        self._out_of_memory_logged = False
        for position in range(0, len(reply), 3):
            name, score = reply[position].decode(), int(float(reply[position + 1]))
            if int(reply[position + 2]):
                state.suspect = name  # claim nothing more until it has run alone
            task = await start_job(self, name, self.run_job(name, score))
            state.claimed.add(name)
            task.add_done_callback(functools.partial(_forget, state, name))

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's run_job; a full Redis that refuses arq's own bookkeeping (the try counter when a job starts,
        the result when it ends) must not stop the worker. arq's start is one transaction, refused whole, so
        no try is counted: the job's lease is dropped and it is claimed again once Redis has room."""
        try:
            await super().run_job(job_id, score)
        except ResponseError as exc:
            if not is_out_of_memory(exc):
                raise
            with contextlib.suppress(ResponseError):
                await self.pool.delete(keys.arq_in_progress(job_id))  # DEL needs no memory
            await self._out_of_memory(exc)

    async def record_health(self) -> None:
        """arq's health key; a full Redis refuses it, which must not stop the worker."""
        try:
            await super().record_health()
        except ResponseError as exc:
            if not is_out_of_memory(exc):
                raise

    async def _out_of_memory(self, exc: ResponseError) -> None:
        """A full Redis refused a claim: claim nothing for a while (logged once per episode)."""
        if not self._out_of_memory_logged and self.state is not None:
            where = describe(self.crawl_settings.redis_url)
            logger.warning(
                "%s; claiming no jobs until it has room", await out_of_memory_message(self.state.redis, where)
            )
            self._out_of_memory_logged = True
        await asyncio.sleep(OUT_OF_MEMORY_PAUSE_S)

    # ---- background loops
    async def _heartbeat_loop(self) -> None:
        interval = self.crawl_settings.heartbeat_interval_s
        while True:
            with contextlib.suppress(Exception):
                await self._heartbeat(int(interval * 3 * 1000))
            await asyncio.sleep(interval)

    async def _heartbeat(self, ttl_ms: int) -> None:
        state = self.state
        assert state is not None
        beat = Heartbeat(
            id=self.worker_id,
            host=self.worker_id.split(":")[0],
            started_at=state.started_at,
            seen_at=now_ms(),
            concurrency=self.crawl_settings.concurrency,
            per_host_concurrency=self.crawl_settings.per_host_concurrency,
            in_flight=state.engine.in_flight,
            pending=state.engine.pending,
            fetches=state.engine.fetches,
            urls_done=state.urls_done,
            pages_per_s_1m=self._pages_rate.observe(state.urls_done),
            jobs_running=len(self.tasks),
            draining=state.engine.draining.is_set(),
        )
        await publish(state.redis, beat, ttl_ms)
        state.engine.metrics.hosts(state.engine.stalled(), state.gate.cooling())

    async def _lease_loop(self) -> None:
        """Refresh the in-progress key of every running job: the lease a dead worker stops renewing."""
        lease_ms = int(self.crawl_settings.lease_s * 1000)
        while True:
            await asyncio.sleep(self.crawl_settings.lease_s / 3)
            running = [job_id for job_id, task in self.tasks.items() if not task.done()]
            if running and self.state is not None:
                with contextlib.suppress(Exception):
                    async with self.state.redis.pipeline(transaction=False) as pipe:
                        for job_id in running:
                            pipe.pexpire(keys.arq_in_progress(job_id), lease_ms)
                        await pipe.execute()

    async def _reconcile_loop(self) -> None:
        interval = self.crawl_settings.reconcile_interval_s
        while True:
            await asyncio.sleep(interval)
            state = self.state
            if state is None:
                continue
            try:
                locked = await state.redis.set(keys.RECONCILE_LOCK, self.worker_id, nx=True, px=int(interval * 2000))
                if locked:
                    resolved = await reconcile_all(state.store)
                    if resolved:
                        logger.info("reconciler resolved %d jobs", resolved)
                    await state.redis.delete(keys.RECONCILE_LOCK)
            except ResponseError as exc:
                if not is_out_of_memory(exc):  # a full Redis is logged once by the commits and claims
                    logger.warning("reconciler pass failed: %s", str(exc).split("\n")[0][:200])
            except Exception:
                logger.warning("reconciler pass failed", exc_info=True)


def _forget(state: WorkerState, name: str, _task: object) -> None:
    state.job_ended(name)
