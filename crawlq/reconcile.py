"""The reconciler: turns jobs that arq gave up on (max tries, expired, timed out) into per-URL failures.

A job is listed in its batch's job table from its enqueue until its last commit; arq removes it from
the queue only after that. So a job that is in the table but no longer in the queue was finished by
arq without us: its open URLs get a failure result named after arq's reason, or, when arq left no
reason (Redis lost data), they are queued again. Every write is conditional on the job still being in
the table, so a reconciler racing the job's own last commit changes nothing.
"""

from __future__ import annotations

import logging

from crawlq import keys
from crawlq.arq_door import failure_reason
from crawlq.connection import result_of
from crawlq.jobs import Deferral, Entry
from crawlq.models import ErrorClass, UrlResult, now_ms
from crawlq.store import Store

__all__ = ["reconcile_all", "reconcile_batch"]

logger = logging.getLogger("crawlq.reconcile")


async def reconcile_batch(store: Store, batch: str) -> int:
    """Resolve the orphaned jobs of one batch; returns how many jobs were resolved."""
    redis = store.redis
    table: dict[bytes, bytes] = await result_of(redis.hgetall(keys.batch_jobs(batch)))
    if not table:
        return 0
    job_ids = list(table)
    scores = await redis.execute_command("ZMSCORE", store.settings.queue_name, *job_ids)  # type: ignore[no-untyped-call]
    resolved = 0
    for job_id, score in zip(job_ids, scores, strict=True):
        if score is not None:
            continue
        name = job_id.decode()
        url_ids = table[job_id].decode().split(",")
        open_ids = await store.pending_entries(batch, url_ids)
        if open_ids:
            reason = failure_reason(await redis.get(keys.arq_result(name)))
            urls = await result_of(redis.hmget(keys.batch_urls(batch), open_ids))
            depths = await store.depths(batch, open_ids)
            rows = zip(open_ids, urls, depths, strict=True)
            entries = [Entry(uid, (url or b"").decode(), 0, depth) for uid, url, depth in rows]
            if reason is None:
                logger.warning("job %s vanished with %d open URLs; queueing them again", name, len(entries))
                await store.commit(batch, deferrals=[Deferral(entries, now_ms())], done_job=name, require_job=True)
            else:
                error, message = reason
                failures = [(e.url_id, _failure(e, error, message)) for e in entries]
                await store.commit(batch, failures, done_job=name, require_job=True)
        else:
            await store.commit(batch, done_job=name, require_job=True)
        resolved += 1
    return resolved


async def reconcile_all(store: Store) -> int:
    """Resolve every active batch's orphaned jobs, and give claims a way to ready jobs of no batch queue."""
    resolved = await store.rehome_orphans()
    for raw in await result_of(store.redis.smembers(keys.ACTIVE)):
        batch = raw.decode()
        if not await store.redis.exists(keys.batch_meta(batch)):
            await result_of(store.redis.srem(keys.ACTIVE, batch))
            continue
        resolved += await reconcile_batch(store, batch)
        await store.complete_if_done(batch)
    return resolved


def _failure(entry: Entry, error: ErrorClass, message: str) -> UrlResult:
    return UrlResult(entry.url, False, None, None, entry.attempts, 0, error, message, entry.url, now_ms())
