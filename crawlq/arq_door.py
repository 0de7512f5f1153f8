"""The one door to arq's private API: every use of arq beyond its documented surface is here, hook by hook,
with what it relies on and why. tests/test_arq_door.py pins each hook's signature, so an arq upgrade that
moves one fails there, with the hook's name, instead of somewhere in a worker.

Hooks (arq 0.28, `arq.worker.Worker`):
- `Worker._poll_iteration(self)`: one pass of arq's poll loop. `workers.main.CrawlWorker` overrides it to wait
  for backlog room or a wake message instead of arq's fixed `poll_delay`, and calls arq's pass in between.
- `Worker.start_jobs(self, job_ids)`: arq claims each ready id with four round trips; the crawl worker replaces
  it with one Lua call (`workers/lua/claim.lua`) and starts the claimed jobs with `start_job` below.
- `Worker.sem`, `Worker.job_counter`, `Worker._release_sem_dec_counter_on_complete(self)`: arq's bookkeeping of
  running jobs (`max_jobs`), which a replaced `start_jobs` must keep exactly as arq does (`start_job`).
- `Worker._jobs_started(self)`: how many jobs this worker started; the crawl worker compares it around a poll
  pass to tell an empty pass from a claiming one (`jobs_started`).
- `arq.jobs.serialize_job`: arq's job payload ({t, f, a, k, et}); the Lua scripts write job keys themselves
  (one atomic call per submit or commit), so the payload must be arq's (`job_payload`).
- arq's stored result of a failed job (`JobExecutionFailed` messages "max N retries exceeded" and
  "job expired"; `TimeoutError` / `CancelledError` class names): the reconciler names the failure from them
  (`failure_reason`).
arq's key prefixes are spelled in `crawlq.keys` (the test pins them to `arq.constants`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from arq import Worker
from arq.jobs import serialize_job

from crawlq.codec import pack, unpack
from crawlq.models import ErrorClass

__all__ = ["HOOKS", "failure_reason", "job_payload", "jobs_started", "start_job"]

#: the private methods used, with the parameters relied on (pinned by tests/test_arq_door.py)
HOOKS: dict[str, tuple[str, ...]] = {
    "_poll_iteration": ("self",),
    "start_jobs": ("self", "job_ids"),
    "_release_sem_dec_counter_on_complete": ("self",),
    "_jobs_started": ("self",),
}
#: the private attributes used, set in `Worker.__init__`
ATTRIBUTES = ("sem", "job_counter")


def job_payload(function: str, args: tuple[Any, ...], enqueue_ms: int) -> bytes:
    """arq's job payload for `function(ctx, *args)`, in msgpack."""
    payload: bytes = serialize_job(function, args, {}, None, enqueue_ms, serializer=pack)
    return payload


async def start_job(worker: Worker, job_id: str, run: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Start a claimed job as arq's `start_jobs` does: take a slot of `worker.sem`, count it in `job_counter`,
    and give both back when the task ends."""
    await worker.sem.acquire()
    worker.job_counter += 1
    task = worker.loop.create_task(run)
    task.add_done_callback(lambda _: worker._release_sem_dec_counter_on_complete())
    worker.tasks[job_id] = task
    return task


def jobs_started(worker: Worker) -> int:
    """How many jobs `worker` started so far."""
    started: int = worker._jobs_started()
    return started


def failure_reason(raw: bytes | None) -> tuple[ErrorClass, str] | None:
    """The error class for arq's stored result of a failed job, or None if it is no failure we name."""
    if raw is None:
        return None
    try:
        data = unpack(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("s"):
        return None
    result: Any = data.get("r")
    exc = result.get("exc", "") if isinstance(result, dict) else ""
    message = result.get("msg", "") if isinstance(result, dict) else str(result)
    if "retries exceeded" in message:
        return ErrorClass.MAX_TRIES, f"the job carrying this URL failed {data.get('t')} times: {message}"
    if "expired" in message:
        return ErrorClass.EXPIRED, "the job carrying this URL expired before a worker picked it up"
    if exc in ("TimeoutError", "CancelledError"):
        error = ErrorClass.TIMEOUT if exc == "TimeoutError" else ErrorClass.CANCELLED
        return error, f"arq ended the job carrying this URL: {exc}"
    return None
