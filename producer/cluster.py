"""What the cluster is doing, read from Redis: queue depth in URLs (not jobs) and per-host politeness state.

The CLI (`crawlq status`, `crawlq hosts`) and the HTTP API (`/queue`, `/hosts`, `/metrics`) both read through here.

Queue depth: a job id is `{batch}:{random}` (crawlq.jobs.new_job_id) and `crawlq:b:{batch}:jobs` maps it to
the comma-separated ids of the URLs it still owns, so counting URLs costs one HGET per queued job.

Hosts: the workers' gate keeps `crawlq:host:{host}` (cooldown_until, next_at, penalty_ms) and
`crawlq:host:{host}:leases` (one member per request in flight, scored by its expiry), and while URLs wait for a
full host, `crawlq:host:{host}:waiters` (a set of wake channels); `keys.host_of_key` tells them apart. The limit
shown is the one this process's settings give the host (CRAWLQ_PER_HOST_CONCURRENCY, CRAWLQ_HOST_RULES): the
workers' settings, when they share the configuration, as in the compose and Kubernetes files.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from crawlq import keys
from crawlq.connection import result_of
from crawlq.heartbeats import Heartbeat, live_workers
from crawlq.hostrules import read_rules
from crawlq.models import BatchStats, now_ms
from crawlq.settings import HostRule, Settings
from crawlq.stats import Field
from crawlq.urls import host_of

__all__ = [
    "ClusterStatus",
    "HostState",
    "QueueUrls",
    "batch_hosts",
    "configured_host_limits",
    "host_bound_note",
    "per_host_note",
    "queue_urls",
    "read_hosts",
]

_PAGE = 1000
_SAMPLE_JOBS = 100  #: open jobs of a batch read to learn which hosts it still waits for


@dataclass(slots=True)
class QueueUrls:
    ready_jobs: int = 0
    deferred_jobs: int = 0
    in_flight_jobs: int = 0
    ready_urls: int = 0
    deferred_urls: int = 0
    in_flight_urls: int = 0  #: URLs of jobs a worker is running (fetching, or waiting for a host slot)

    def urls(self) -> dict[str, int]:
        return {"ready": self.ready_urls, "deferred": self.deferred_urls, "in_flight": self.in_flight_urls}

    def jobs(self) -> dict[str, int]:
        return {"ready": self.ready_jobs, "deferred": self.deferred_jobs, "in_flight": self.in_flight_jobs}


async def _url_counts(redis: Redis, job_ids: list[str]) -> list[int]:
    counts: list[int] = []
    for start in range(0, len(job_ids), _PAGE):
        page = job_ids[start : start + _PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in page:
                pipe.hget(keys.batch_jobs(job_id.rpartition(":")[0]), job_id)
            rows = await pipe.execute()
        counts += [len(row.split(b",")) if row else 0 for row in rows]
    return counts


async def _running(redis: Redis) -> set[str]:
    prefix = keys.arq_in_progress("")
    return {key.decode().removeprefix(prefix) async for key in redis.scan_iter(match=keys.arq_in_progress("*"))}


async def queue_urls(redis: Redis, queue_name: str) -> QueueUrls:
    """Jobs and URLs in the queue by state: ready (due, not running), deferred (due later), in flight."""
    now = now_ms()
    entries = await result_of(redis.zrange(queue_name, 0, -1, withscores=True))
    running = await _running(redis)
    ids = [raw.decode() for raw, _ in entries]
    counts = await _url_counts(redis, ids)
    depth = QueueUrls()
    for job_id, (_, score), urls in zip(ids, entries, counts, strict=True):
        if job_id in running:
            depth.in_flight_jobs += 1
            depth.in_flight_urls += urls
        elif score <= now:
            depth.ready_jobs += 1
            depth.ready_urls += urls
        else:
            depth.deferred_jobs += 1
            depth.deferred_urls += urls
    return depth


# ---------------------------------------------------------------- hosts
@dataclass(slots=True)
class HostState:
    host: str
    in_flight: int  #: requests holding a lease on the host now
    limit: int  #: requests in flight the host may have (per-host concurrency or its host rule)
    delay_s: float  #: minimum gap between request starts (0: none)
    cooldown_s: float  #: seconds of cooldown left after a 429/503 (0: none)
    penalty_ms: int  #: the cooldown the next throttle starts from

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- status
@dataclass(slots=True)
class ClusterStatus:
    """The cluster at a glance (`Client.status`): `crawlq status` renders it, `--json` prints `to_dict()`."""

    queue: QueueUrls
    workers: list[Heartbeat]
    batches: list[BatchStats | str]  #: recent batches, newest first; a name alone: its counters are gone
    hosts: list[HostState] = field(default_factory=list)  #: the busiest hosts shown
    hosts_total: int = 0  #: hosts with politeness state
    overall: dict[str, Any] = field(default_factory=dict)  #: counters over every batch (`Store.overall`)
    notes: dict[str, str] = field(default_factory=dict)  #: running batch -> why it is slow (per-host limits)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`crawlq status --json`)."""
        return {
            "queue": {"urls": self.queue.urls(), "jobs": self.queue.jobs()},
            "hosts": [host.as_dict() for host in self.hosts],
            "hosts_total": self.hosts_total,
            "workers": [beat.to_record() for beat in self.workers],
            "batches": [
                b.model_dump() if isinstance(b, BatchStats) else {"batch": b, "state": "unknown"} for b in self.batches
            ],
            "overall": self.overall,
            "notes": self.notes,
        }


def configured_host_limits(settings: Settings, host: str, runtime_rules: Sequence[HostRule] = ()) -> tuple[int, float]:
    """(concurrency, delay_s) the settings give `host`: the first matching host rule (run-time rules first),
    else the defaults. The same rule as workers.gate.host_limits, without robots.txt's Crawl-delay."""
    concurrency, delay_s = settings.per_host_concurrency, settings.per_host_delay_s
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for rule in [*runtime_rules, *settings.host_rules]:
        if fnmatch.fnmatch(host, rule.pattern) or fnmatch.fnmatch(bare, rule.pattern):
            return rule.concurrency or concurrency, rule.delay_s if rule.delay_s is not None else delay_s
    return concurrency, delay_s


async def _host_names(redis: Redis) -> set[str]:
    names: set[str] = set()
    async for raw in redis.scan_iter(match=keys.HOST_KEYS, count=1000):
        names.add(keys.host_of_key(raw)[0])
    return names


async def _server_ms(redis: Redis) -> int:
    seconds, micros = await result_of(redis.time())
    return int(seconds) * 1000 + int(micros) // 1000


async def read_hosts(redis: Redis, settings: Settings) -> list[HostState]:
    """Every host with politeness state, busiest first (in flight, then cooldown left, then name)."""
    names = sorted(await _host_names(redis))
    rules = await read_rules(redis)
    now = await _server_ms(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcount(keys.host_leases(name), f"({now}", "+inf")
            pipe.hmget(keys.host_state(name), ["cooldown_until", "penalty_ms"])
        replies = await pipe.execute()
    hosts: list[HostState] = []
    for index, name in enumerate(names):
        in_flight, (until, penalty) = replies[2 * index], replies[2 * index + 1]
        limit, delay_s = configured_host_limits(settings, name, rules)
        cooldown_s = max(0.0, (float(until or 0) - now) / 1000)
        hosts.append(HostState(name, int(in_flight), limit, delay_s, round(cooldown_s, 3), int(float(penalty or 0))))
    hosts.sort(key=lambda host: (-host.in_flight, -host.cooldown_s, host.host))
    return hosts


# ---------------------------------------------------------------- why a batch is slow
async def batch_hosts(redis: Redis, batch: str) -> set[str]:
    """Hosts of the URLs the batch still waits for, from a sample of its open jobs (up to `_SAMPLE_JOBS`)."""
    _, owned = await result_of(redis.hscan(keys.batch_jobs(batch), 0, count=_SAMPLE_JOBS))
    url_ids = [url_id for row in list(owned.values())[:_SAMPLE_JOBS] for url_id in row.decode().split(",") if url_id]
    if not url_ids:
        return set()
    urls = await result_of(redis.hmget(keys.batch_urls(batch), url_ids[: _SAMPLE_JOBS * 10]))
    return {host_of(url.decode()) for url in urls if url}


def host_bound_note(wanted: set[str], hosts: list[HostState], beats: list[Heartbeat]) -> str | None:
    """The sentence saying per-host limits, not the workers, bound a batch: every host it still waits for is
    at its limit or cooling down, at least one at its limit, while live workers have fetch slots to spare
    (their concurrency less the leases held cluster-wide). None when that is not so."""
    live = [beat for beat in beats if not beat.draining]
    slots = sum(beat.concurrency for beat in live)
    free = slots - sum(host.in_flight for host in hosts)
    mine = [host for host in hosts if host.host in wanted]
    at_limit = [host for host in mine if host.in_flight >= host.limit]
    if not live or free <= 0 or not at_limit or len(mine) < len(wanted):
        return None
    if any(host.in_flight < host.limit and host.cooldown_s <= 0 for host in mine):
        return None
    limits = sorted({host.limit for host in at_limit})
    return (
        f"per-host limits bound this batch: its busiest hosts are at their limit "
        f"({', '.join(map(str, limits))}) while workers have {free} free slots; raise "
        "CRAWLQ_PER_HOST_CONCURRENCY or add a host rule (crawlq hosts set)"
    )


def _default_limit(settings: Settings, beats: list[Heartbeat]) -> Settings:
    """The settings with the workers' per-host concurrency (from their heartbeats) when they carry one."""
    given = {beat.per_host_concurrency for beat in beats if beat.per_host_concurrency}
    if len(given) != 1:
        return settings
    return settings.model_copy(update={"per_host_concurrency": given.pop()})


async def per_host_note(redis: Redis, settings: Settings, batch: str) -> str | None:
    """`host_bound_note` for one batch, read from Redis (None for a paused or complete batch)."""
    meta = await result_of(redis.hmget(keys.batch_meta(batch), [Field.FINISHED_AT, Field.PAUSED_AT]))
    if any(meta):
        return None
    wanted = await batch_hosts(redis, batch)
    if not wanted:
        return None
    beats = await live_workers(redis)
    hosts = await read_hosts(redis, _default_limit(settings, beats))
    return host_bound_note(wanted, hosts, beats)
