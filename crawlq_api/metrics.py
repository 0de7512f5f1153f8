"""Prometheus metrics, read from Redis at scrape time: queue depth in URLs, workers, fetch outcomes,
latency, retries, hosts in cooldown and batch progress. No URL or host is ever a label.

Each scrape reads its sources concurrently under the API's read deadline; a source that fails or
stalls is left out and `crawlq_scrape_source_up{source=...}` says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from redis.asyncio import Redis

from crawlq import histogram, keys
from crawlq.connection import result_of
from crawlq.heartbeats import Heartbeat, live_workers
from crawlq.models import BatchStats
from crawlq.stats import Family, Field
from crawlq.store import Store
from crawlq_api.reads import Gathered, gather_within
from producer.cluster import QueueUrls, queue_urls, read_hosts

__all__ = ["LATENCY_BUCKETS_S", "SOURCES", "cumulative_latency", "read_totals", "render_metrics"]

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SOURCES = ("queue", "workers", "totals", "cooldowns", "batches")
ACTIVE_BATCHES_SHOWN = 50  #: batches with a progress series (the most recent active ones)


async def read_totals(redis: Redis) -> dict[str, str]:
    raw = await result_of(redis.hgetall(keys.STATS_ALL))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def _hosts_in_cooldown(store: Store) -> int:
    """Hosts cooling down, read as `GET /hosts` reads them (one pipelined round trip for every host)."""
    return sum(1 for host in await read_hosts(store.redis, store.settings) if host.cooldown_s > 0)


async def _active_batches(store: Store) -> tuple[int, list[BatchStats]]:
    names = sorted(raw.decode() for raw in await result_of(store.redis.smembers(keys.ACTIVE)))
    shown: list[BatchStats] = []
    for name in names[-ACTIVE_BATCHES_SHOWN:]:
        raw = await result_of(store.redis.hgetall(keys.batch_meta(name)))
        if raw:
            shown.append(BatchStats.from_counters(name, {k.decode(): v.decode() for k, v in raw.items()}))
    return len(names), shown


def _status_class(code: str) -> str:
    return f"{code[0]}xx" if len(code) == 3 and code.isdigit() else "other"


def _counter_families(totals: Mapping[str, str]) -> Iterator[Metric]:
    def number(name: Field) -> float:
        return float(totals.get(name, 0) or 0)

    done = CounterMetricFamily("crawlq_urls_done", "URLs with a final result, by outcome", labels=["outcome"])
    done.add_metric(["succeeded"], number(Field.SUCCEEDED))
    done.add_metric(["failed"], number(Field.FAILED))
    yield done
    by_class: dict[str, float] = {}
    for code, value in Family.STATUS.counts(totals).items():
        by_class[_status_class(code)] = by_class.get(_status_class(code), 0) + float(value)
    statuses = CounterMetricFamily(
        "crawlq_responses", "final HTTP responses of URLs, by status class", labels=["status_class"]
    )
    for status_class in sorted(by_class):
        statuses.add_metric([status_class], by_class[status_class])
    yield statuses
    errors = CounterMetricFamily("crawlq_url_errors", "URLs that failed, by error class", labels=["error_class"])
    for error_class, value in sorted(Family.ERROR.counts(totals).items()):
        errors.add_metric([error_class], float(value))
    yield errors
    yield CounterMetricFamily(
        "crawlq_fetch_attempts", "fetch attempts of URLs with a result", value=number(Field.ATTEMPTS)
    )
    retries = number(Field.ATTEMPTS) - number(Field.DONE)
    yield CounterMetricFamily("crawlq_retries", "attempts beyond the first, over URLs with a result", value=retries)
    yield CounterMetricFamily(
        "crawlq_fetched_bytes", "decompressed body bytes of final responses", value=number(Field.BYTES)
    )
    yield _latency_histogram(totals)


def cumulative_latency(totals: Mapping[str, str]) -> list[tuple[float, int]]:
    """(bound_s, latencies at most bound_s) for each of LATENCY_BUCKETS_S, from crawlq's `h:<i>` counters."""
    counts = {int(index): int(value) for index, value in Family.LATENCY_BUCKET.counts(totals).items()}
    return [
        (bound_s, sum(n for index, n in counts.items() if histogram.GAMMA**index <= bound_s * 1000 * (1 + 1e-9)))
        for bound_s in LATENCY_BUCKETS_S
    ]


def _latency_histogram(totals: Mapping[str, str]) -> Metric:
    """crawlq's log buckets (bucket i holds latencies up to GAMMA**i ms) regrouped into Prometheus buckets."""
    buckets = [(repr(bound_s), float(below)) for bound_s, below in cumulative_latency(totals)]
    buckets.append(("+Inf", float(sum(int(v) for v in Family.LATENCY_BUCKET.counts(totals).values()))))
    sum_s = float(totals.get(Field.LATENCY_SUM_MS, 0) or 0) / 1000
    return HistogramMetricFamily(
        "crawlq_fetch_duration_seconds", "time of a URL's last attempt, to the end of the body", buckets, sum_s
    )


def _queue_families(depth: QueueUrls) -> Iterator[Metric]:
    urls = GaugeMetricFamily("crawlq_queue_urls", "URLs in the queue by state", labels=["state"])
    jobs = GaugeMetricFamily("crawlq_queue_jobs", "jobs (chunks of URLs) in the queue by state", labels=["state"])
    for state, url_count, job_count in (
        ("ready", depth.ready_urls, depth.ready_jobs),
        ("deferred", depth.deferred_urls, depth.deferred_jobs),
        ("in_flight", depth.in_flight_urls, depth.in_flight_jobs),
    ):
        urls.add_metric([state], url_count)
        jobs.add_metric([state], job_count)
    yield urls
    yield jobs


def _worker_families(beats: list[Heartbeat]) -> Iterator[Metric]:
    yield GaugeMetricFamily("crawlq_workers_alive", "workers with a live heartbeat", value=len(beats))
    in_flight = sum(beat.in_flight for beat in beats)
    yield GaugeMetricFamily("crawlq_fetches_in_flight", "fetches in flight over all live workers", value=in_flight)
    slots = sum(beat.concurrency for beat in beats)
    yield GaugeMetricFamily("crawlq_worker_fetch_slots", "concurrent fetches the live workers allow", value=slots)


def _batch_families(active: int, shown: list[BatchStats]) -> Iterator[Metric]:
    yield GaugeMetricFamily("crawlq_batches_active", "batches not yet complete", value=active)
    progress = GaugeMetricFamily(
        "crawlq_batch_urls", "URLs of an active batch by state (the most recent 50 active)", labels=["batch", "state"]
    )
    for stats in shown:
        for state, value in (("total", stats.total), ("done", stats.done), ("failed", stats.failed)):
            progress.add_metric([stats.batch, state], value)
    yield progress


def _families(gathered: Gathered) -> Iterator[Metric]:
    values = gathered.values
    if "queue" in values:
        yield from _queue_families(values["queue"])
    if "workers" in values:
        yield from _worker_families(values["workers"])
    if "totals" in values:
        yield from _counter_families(values["totals"])
    if "cooldowns" in values:
        yield GaugeMetricFamily(
            "crawlq_hosts_in_cooldown", "hosts cooling down after 429/503", value=values["cooldowns"]
        )
    if "batches" in values:
        yield from _batch_families(*values["batches"])
    up = GaugeMetricFamily("crawlq_scrape_source_up", "1 if the source was read within the deadline", labels=["source"])
    for source in SOURCES:
        up.add_metric([source], 0 if source in gathered.failed else 1)
    yield up


class _Snapshot:
    """A collector that yields families built before the scrape (the reads are async)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def render_metrics(store: Store, queue_name: str, deadline_s: float) -> bytes:
    """The Prometheus text exposition of the cluster's state."""
    redis = store.redis
    gathered = await gather_within(
        deadline_s,
        {
            "queue": queue_urls(redis, queue_name),
            "workers": live_workers(redis),
            "totals": read_totals(redis),
            "cooldowns": _hosts_in_cooldown(store),
            "batches": _active_batches(store),
        },
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(_families(gathered)))
    return generate_latest(registry)
