"""The result store: enqueue URL chunks, commit results exactly once, read stats and results back.

Every write goes through one Lua script call (`lua/enqueue.lua`, `lua/commit.lua`), so a URL's result,
the batch counters, the overall counters and the batch's completion change together or not at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from crawlq import keys
from crawlq.codec import pack, unpack
from crawlq.connection import result_of
from crawlq.errors import BatchLost, CrawlqError, UnknownBatch
from crawlq.jobs import Deferral, Discovery, Entry, job_payload, new_job_id
from crawlq.models import BatchStats, UrlResult, now_ms
from crawlq.options import BatchOptions
from crawlq.settings import Settings
from crawlq.stats import Field, counters

__all__ = [
    "BatchCancelled",
    "CommitOutcome",
    "CommitReply",
    "EnqueueOutcome",
    "OptionsConflict",
    "Store",
    "lost_reason",
]

STRANDED_CHECK_LIMIT = 2000  #: `stranded` looks at batches with at most this many open jobs
SUBMIT_LEASE_MS = 30_000  #: a producer that dies mid-submit stops holding its batch open after this


def _script(name: str) -> str:
    return (files("crawlq") / "lua" / name).read_text()


class BatchCancelled(CrawlqError, ValueError):
    """A submit to a batch that was cancelled."""


class OptionsConflict(CrawlqError, ValueError):
    """A submit to an existing batch asked for other fetch options than the batch already has."""


@dataclass(slots=True)
class EnqueueOutcome:
    added: int
    duplicates: int
    jobs: int


class CommitReply(IntEnum):
    """commit.lua's first reply when it wrote nothing (a reply >= 0 is the number of new results it recorded)."""

    UNKNOWN_BATCH = -1  #: the batch's counters are gone
    JOB_CLOSED = -2  #: `require_job` and the job is no longer in the job table
    SOME_RECORDED = -3  #: some results were recorded already; the rest of the reply flags the new ones


@dataclass(slots=True)
class CommitOutcome:
    added: int  #: results that were new (the rest were already recorded)
    completed: bool  #: this commit completed the batch
    known_batch: bool = True
    job_still_open: bool = True


def _results_args(results: Sequence[UrlResult], url_ids: Sequence[str]) -> list[Any]:
    """commit.lua's result arguments: counts, latency sum, counter pairs, then (url id, record) pairs."""
    counts, latency_sum = counters(results)
    args: list[Any] = [len(results), len(counts), repr(latency_sum)]
    for field, by in counts.items():
        args += [field, by]
    for url_id, result in zip(url_ids, results, strict=True):
        args += [url_id, pack(result.to_record())]
    return args


def _deferral_args(batch: str, deferrals: Sequence[Deferral], now: int) -> list[Any]:
    """commit.lua's deferral arguments: per deferral a new job id, its arq payload, when it runs (never before
    now) and its URL ids (comma separated)."""
    tail: list[Any] = []
    for deferral in deferrals:
        tail += [
            new_job_id(batch),
            job_payload(batch, deferral.entries, now),
            max(deferral.run_at_ms, now),
            ",".join(entry.url_id for entry in deferral.entries),
        ]
    return tail


def lost_reason(stats: BatchStats, manifest: int, recorded: int, open_jobs: int, submitters: int) -> str | None:
    """Why a batch can never be complete and right, from the sizes of its keys, or None.

    Every write keeps these equal (one Lua call each): manifest == total, recorded results == done, and
    every URL without a result is owned by a job in the job table. A key that went missing breaks one."""
    if manifest < stats.total:
        return f"its manifest holds {manifest} of its {stats.total} URLs"
    if recorded < stats.done:
        return f"{recorded} of its {stats.done} recorded results are left"
    if not stats.complete and stats.done < stats.total and open_jobs == 0 and submitters == 0:
        return f"{stats.total - stats.done} of its {stats.total} URLs have no job left to run them"
    return None


class Store:
    """Batch state in Redis. One instance per process; `redis` must decode nothing (bytes in, bytes out)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._enqueue: AsyncScript = redis.register_script(_script("enqueue.lua"))
        self._commit: AsyncScript = redis.register_script(_script("commit.lua"))
        self._discover: AsyncScript = redis.register_script(_script("discover.lua"))
        self._rehome: AsyncScript = redis.register_script(_script("rehome.lua"))

    # ---- writes
    async def enqueue(
        self,
        batch: str,
        chunks: Sequence[Sequence[Entry]],
        *,
        token: str = "",
        run_at_ms: int | None = None,
        expect_batch: bool = False,
    ) -> EnqueueOutcome:
        """Register the entries of `chunks` in `batch` and enqueue one job per chunk that has new URLs.

        The call is idempotent: sent again with the same arguments (redis-py's retry after a dropped
        connection lost the reply) it answers what its first run did (`keys.enqueue_reply`).

        :param expect_batch: an earlier call of the same submit wrote the batch: raise `BatchLost` instead of
            writing anything if its counters are gone (an evicting or flushed Redis)."""
        now = now_ms()
        job_ids = [new_job_id(batch) for _ in chunks]
        args: list[Any] = [batch, now, self.settings.result_ttl_s, self.settings.job_expires_s * 1000]
        args += [token, SUBMIT_LEASE_MS, len(chunks), "1" if expect_batch else "0"]
        for job_id, chunk in zip(job_ids, chunks, strict=True):
            args += [job_id, job_payload(batch, list(chunk), now), run_at_ms or now]
        args.append(keys.ARQ_JOB_PREFIX)
        script_keys = [
            keys.batch_meta(batch),
            keys.batch_urls(batch),
            keys.batch_jobs(batch),
            self.settings.queue_name,
            keys.batch_submitters(batch),
            keys.BATCHES,
            keys.ACTIVE,
            keys.wake(self.settings.queue_name),
            keys.batch_queue(batch),
            keys.SCHED,
            keys.enqueue_reply(job_ids[0] if job_ids else new_job_id(batch)),  # the call's own name
        ]
        added, duplicates, jobs = await self._enqueue(keys=script_keys, args=args)
        if int(added) == -2:
            raise BatchCancelled(f"batch {batch} was cancelled; submit to a new batch")
        if int(added) < 0:
            raise BatchLost(batch, "its counters vanished from Redis while it was being submitted")
        return EnqueueOutcome(int(added), int(duplicates), int(jobs))

    async def commit(
        self,
        batch: str,
        results: Sequence[tuple[str, UrlResult]] = (),
        deferrals: Sequence[Deferral] = (),
        *,
        done_job: str = "",
        require_job: bool = False,
        token: str = "",
    ) -> CommitOutcome:
        """Record results (first write wins), enqueue deferrals, close `done_job` (job ids, comma separated),
        and complete the batch.

        The counters of the new results are summed here and applied by the script only if every result
        sent is new; otherwise it writes nothing and names the new ones, and the call is repeated with
        those (rare: a job run twice, racing producers)."""
        unique: dict[str, UrlResult] = {}
        for url_id, result in results:
            unique.setdefault(url_id, result)  # the same URL twice in one call: the first result wins
        rows = list(unique.items())
        now = now_ms()
        tail = _deferral_args(batch, deferrals, now)
        script_keys = self._commit_keys(batch)
        while True:
            args: list[Any] = [batch, now, self.settings.result_ttl_s, self.settings.job_expires_s * 1000]
            args += [done_job, "1" if require_job else "0", token]
            args += _results_args([result for _, result in rows], [url_id for url_id, _ in rows])
            args += [len(deferrals), *tail, keys.ARQ_JOB_PREFIX]
            reply = await self._commit(keys=script_keys, args=args)
            added, completed = int(reply[0]), int(reply[1])
            if added == CommitReply.SOME_RECORDED:
                rows = [row for row, new in zip(rows, reply[2:], strict=True) if int(new)]
                continue
            if added == CommitReply.UNKNOWN_BATCH:
                return CommitOutcome(0, False, known_batch=False)
            if added == CommitReply.JOB_CLOSED:
                return CommitOutcome(0, False, job_still_open=False)
            return CommitOutcome(added, bool(completed))

    async def rehome_orphans(self, read_limit: int = 1000) -> int:
        """Put arq jobs that are ready but in no batch's ready queue (put in the arq queue by hand, or by an
        older crawlq) where claims look (`lua/rehome.lua`); returns how many. A job of no known batch goes to
        the orphans' queue: it is claimed, and arq records why it cannot run (a foreign payload never runs)."""
        script_keys = [self.settings.queue_name, keys.CLAIMED, keys.SCHED]
        args: list[int | str] = [now_ms(), read_limit, keys.BATCH_PREFIX, keys.ORPHANS_BATCH]
        return int(await self._rehome(keys=script_keys, args=args))

    async def complete_if_done(self, batch: str) -> bool:
        """Complete `batch` if every URL has its result (`done == total`) and no submit holds it; True if this
        call completed it. The reconciler calls it for a batch whose last result came before a stale submit
        lease ended."""
        return (await self.commit(batch)).completed

    def _commit_keys(self, batch: str) -> list[str]:
        """commit.lua's KEYS, in its order."""
        return [
            keys.batch_meta(batch),
            keys.batch_urls(batch),
            keys.batch_results(batch),
            keys.batch_jobs(batch),
            self.settings.queue_name,
            keys.batch_submitters(batch),
            keys.ACTIVE,
            keys.STATS_ALL,
            keys.batch_events(batch),
            keys.batch_queue(batch),
        ]

    async def discover(self, batch: str, found: Sequence[Discovery]) -> int:
        """Add the links found on pages to `batch` and enqueue them (`lua/discover.lua`); returns how many
        URLs joined. Call it before the pages' results are committed: a page's links are taken once (a
        page fetched twice adds nothing the second time), a URL already in the batch is not added again,
        and the batch's total stops at its follow options' `max_pages`."""
        now = now_ms()
        size = self.settings.chunk_size
        args: list[Any] = [now, self.settings.result_ttl_s, self.settings.job_expires_s * 1000, len(found)]
        for page in found:
            chunks = [page.entries[start : start + size] for start in range(0, len(page.entries), size)]
            args += [page.parent_id, page.depth, len(chunks)]
            for chunk in chunks:
                args += [new_job_id(batch), job_payload(batch, chunk, now), now]
        script_keys = [
            keys.batch_meta(batch),
            keys.batch_urls(batch),
            keys.batch_jobs(batch),
            self.settings.queue_name,
            keys.batch_found(batch),
            keys.batch_parents(batch),
            keys.batch_options(batch),
            keys.wake(self.settings.queue_name),
            keys.batch_queue(batch),
            keys.SCHED,
        ]
        args += [batch, keys.ARQ_JOB_PREFIX]
        added, _ = await self._discover(keys=script_keys, args=args)
        return int(added)

    async def depths(self, batch: str, url_ids: Sequence[str]) -> list[int]:
        """How many links away from a submitted URL each of `url_ids` was found (0: submitted)."""
        raw = await result_of(self.redis.hmget(keys.batch_found(batch), list(url_ids))) if url_ids else []
        return [int(value.split(b",")[0]) if value else 0 for value in raw]

    async def save_options(self, batch: str, options: BatchOptions) -> None:
        """Write the batch's options once, before its first URL is enqueued. A later submit to the same
        batch must ask for the same options (workers read them once per batch), or for none."""
        key = keys.batch_options(batch)
        if options.empty:
            return
        wrote = await self.redis.set(key, options.to_json(), ex=self.settings.result_ttl_s, nx=True)
        if not wrote:
            current = await self.load_options(batch)
            if current != options:
                raise OptionsConflict(f"batch {batch} already has other fetch options; submit to a new batch")
            await self.redis.expire(key, self.settings.result_ttl_s)

    async def load_options(self, batch: str) -> BatchOptions:
        """The batch's options (empty when it has none)."""
        return BatchOptions.from_json(await self.redis.get(keys.batch_options(batch)))

    async def earlier_records(self, batch: str, url_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The records an earlier batch holds for `url_ids` (one HMGET), by url id."""
        if not url_ids:
            return {}
        raw = await self.results_for(batch, url_ids)
        return {url_id: unpack(value) for url_id, value in zip(url_ids, raw, strict=True) if value is not None}

    # ---- reads
    async def stats(self, batch: str) -> BatchStats:
        """The batch's statistics; `state` is "lost" when some of its keys went missing (see `lost_reason`)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.batch_meta(batch))
            pipe.hlen(keys.batch_urls(batch))
            pipe.hlen(keys.batch_results(batch))
            pipe.hlen(keys.batch_jobs(batch))
            pipe.zcount(keys.batch_submitters(batch), now_ms(), "+inf")
            raw, manifest, recorded, open_jobs, submitters = await pipe.execute()
        if not raw:
            raise UnknownBatch(batch)
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        stats = BatchStats.from_counters(batch, fields)
        reason = fields.get(Field.LOST) or lost_reason(stats, manifest, recorded, open_jobs, submitters)
        return stats if reason is None else stats.model_copy(update={"state": "lost", "lost_reason": reason})

    async def stranded(self, batch: str, limit: int = STRANDED_CHECK_LIMIT) -> int:
        """How many open jobs the batch has when none of them is in the queue (0 when one is, or when it has
        more than `limit`, not looked at). A job leaves the queue only after its last commit closed it, or when
        arq gave up on it and the reconciler has yet to resolve it: lasting, this means keys went missing."""
        table = await result_of(self.redis.hlen(keys.batch_jobs(batch)))
        if not table or table > limit:
            return 0
        names = await result_of(self.redis.hkeys(keys.batch_jobs(batch)))
        if not names:  # the last jobs closed since HLEN
            return 0
        scores = await self.redis.execute_command("ZMSCORE", self.settings.queue_name, *names)  # type: ignore[no-untyped-call]
        return 0 if any(score is not None for score in scores) else len(names)

    async def mark_lost(self, batch: str, reason: str) -> None:
        """Record in the batch's counters that it is lost (found by a reader over time, see `stranded`)."""
        if await result_of(self.redis.exists(keys.batch_meta(batch))):
            await result_of(self.redis.hset(keys.batch_meta(batch), Field.LOST, reason))

    async def overall(self) -> dict[str, Any]:
        raw = {k.decode(): v.decode() for k, v in (await result_of(self.redis.hgetall(keys.STATS_ALL))).items()}
        stats = BatchStats.from_counters("*", raw)
        return stats.model_dump(
            include={
                "done",
                "succeeded",
                "failed",
                "success_rate",
                "avg_latency_ms",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "status_counts",
                "error_counts",
                "attempts",
                "bytes",
            }
        )

    async def results_for(self, batch: str, url_ids: Sequence[str]) -> list[bytes | None]:
        if not url_ids:
            return []
        return list(await result_of(self.redis.hmget(keys.batch_results(batch), list(url_ids))))

    async def iter_results(self, batch: str, page: int = 1000) -> AsyncIterator[UrlResult]:
        """Every recorded result of a batch, streamed (HSCAN), in no particular order."""
        if not await self.redis.exists(keys.batch_meta(batch)):
            raise UnknownBatch(batch)
        cursor = 0
        while True:
            cursor, chunk = await self.redis.hscan(keys.batch_results(batch), cursor, count=page)
            if chunk:
                ids = list(chunk)
                urls = await result_of(self.redis.hmget(keys.batch_urls(batch), ids))
                for url_id, url in zip(ids, urls, strict=True):
                    yield UrlResult.from_record((url or b"").decode(), unpack(chunk[url_id]))
            if cursor == 0:
                return

    async def owned_open_ids(self, batch: str, job_id: str, url_ids: Sequence[str]) -> set[str]:
        """The ids among `url_ids` that job `job_id` still owns (its row in the job table) and that have
        no result yet. Two producers racing may put one URL in two payloads; only one job owns it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.batch_jobs(batch), job_id)
            pipe.hmget(keys.batch_results(batch), list(url_ids))
            row, have = await pipe.execute()
        if row is None:
            return set()
        owned = set(row.decode().split(","))
        return {url_id for url_id, value in zip(url_ids, have, strict=True) if value is None and url_id in owned}

    async def pending_entries(self, batch: str, url_ids: Sequence[str]) -> list[str]:
        """The ids among `url_ids` that have no result yet."""
        have = await self.results_for(batch, url_ids)
        return [url_id for url_id, value in zip(url_ids, have, strict=True) if value is None]
