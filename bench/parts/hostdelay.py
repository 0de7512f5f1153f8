"""Part `hostdelay` (issue 11, target 5): a per-host delay over many hosts, measured at the servers.

The user shape: a polite crawl with a crawl delay, where every host's pace is set by the delay and the
cluster's job is to keep every host at exactly that pace. `hostdelay_hosts` x `hostdelay_urls_per_host`
instant pages (200 x 10 in the full profile; 50 x 5 in smoke) on `bench.hosts_target` hosts, URLs
round-robin over the hosts, 3 workers x concurrency 100, `per_host_delay_s` = 0.2, otherwise the default
politeness (2 in flight per host, robots.txt on; every host's robots.txt is fetched by an untimed warm-up
batch of one URL per host, whose requests are then forgotten).

The target site notes when each request reaches its handler (`--record-starts`, monotonic clock of the
target process), so the gaps are the ones the hosts see. Figures: the smallest gap between two request
starts on any one host (must be >= the delay), how many gaps were below it, and wall / ideal, where wall is
submit start to batch complete and ideal = urls_per_host x delay plus one page (the batch's median latency).
A start seen late at the target (its event loop busy, the request queued in the kernel) makes the gap before
it longer and the gap after it shorter by the same amount; the spans over two gaps (start i to start i + 2,
halved) show whether the sender kept the pace: "min two-gap mean" stays >= the delay when only such
lateness shortened a gap. The same gaps are also taken at the workers, from the stored results (each
attempt's start: fetched_at minus latency_ms, ms resolution): a gap short at the hosts but not there was
made after the fetch began (the request's sending, the target's own lag), not by the gate's pacing.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bench.cluster import fetch_spans, own_server, running_cluster, timed_batch
from bench.context import Bench, PartRound
from bench.hosts_target import urls_round_robin
from bench.parts.manyhosts import hosts_target, manyhosts_settings, take_starts
from bench.workload import run_tag

__all__ = ["gaps_s", "run"]

WORKERS = 3
CONCURRENCY = 100
DELAY_S = 0.2
RESULT_CLOCK_S = 0.002  #: a result's start is known to the ms: a gap at the workers may read this much short


def gaps_s(starts: dict[str, list[float]], step: int = 1) -> list[float]:
    """The spans between request starts `step` apart on each host (step 1: consecutive), all hosts together,
    divided by `step`."""
    gaps: list[float] = []
    for times in starts.values():
        ordered = sorted(times)
        gaps += [(later - earlier) / step for earlier, later in zip(ordered, ordered[step:], strict=False)]
    return gaps


async def run(bench: Bench) -> PartRound:
    hosts, per_host = bench.profile.hostdelay_hosts, bench.profile.hostdelay_urls_per_host
    settings = manyhosts_settings(per_host_delay_s=DELAY_S)
    part = PartRound(
        detail={
            "settings": f"crawlq: {WORKERS} workers x concurrency {CONCURRENCY}, per_host_delay_s {DELAY_S}, "
            f"2 per host, robots.txt on; {hosts} hosts x {per_host} instant pages"
        }
    )
    async with hosts_target(hosts, record_starts=True) as (port, target_pid), own_server() as server:
        warmup = urls_round_robin(port, hosts, hosts, run_tag())
        async with running_cluster(settings, WORKERS, server, bench.log_dir("hostdelay"), warmup) as cluster:
            await take_starts(port)  # forget the warm-up's requests
            urls = urls_round_robin(port, hosts, hosts * per_host, run_tag())
            batch = await timed_batch(cluster, urls, {"redis": [server.pid or 0], "target": [target_pid]})
            starts = await take_starts(port)
            sent: dict[str, list[float]] = {}
            for span in await fetch_spans(cluster, batch.stats.batch):
                sent.setdefault(urlsplit(span.url).netloc, []).append(span.start_s)
    at_workers = gaps_s(sent)
    gaps, pairs = gaps_s(starts), gaps_s(starts, 2)
    requests = sum(len(times) for times in starts.values())
    if requests < len(urls):
        raise RuntimeError(f"the target saw {requests} requests for {len(urls)} URLs")
    page_s = (batch.stats.p50_ms or 0) / 1000
    ideal = per_host * DELAY_S + page_s
    part.rows.append(
        {
            "mode": f"crawlq {WORKERS} workers, {hosts} hosts x {per_host}, delay {DELAY_S:g} s",
            "urls": len(urls),
            "requests_seen": requests,
            "wall_s": round(batch.wall_s, 3),
            "ideal_s": round(ideal, 3),
            "wall/ideal": round(batch.wall_s / ideal, 4),
            "min_gap_s": round(min(gaps), 4),
            "gaps_below_delay": sum(1 for gap in gaps if gap < DELAY_S),
            "median_gap_s": round(sorted(gaps)[len(gaps) // 2], 4),
            "min_two_gap_mean_s": round(min(pairs), 4),
            "two_gap_means_below_delay": sum(1 for pair in pairs if pair < DELAY_S),
            "min_gap_at_workers_s": round(min(at_workers), 4),
            "gaps_below_delay_at_workers": sum(1 for gap in at_workers if gap < DELAY_S - RESULT_CLOCK_S),
        }
    )
    part.figures["min start gap on a host s"] = part.rows[0]["min_gap_s"]
    part.figures["wall/ideal"] = part.rows[0]["wall/ideal"]
    part.figures["median start gap on a host s"] = part.rows[0]["median_gap_s"]
    part.figures["min two-gap mean on a host s"] = part.rows[0]["min_two_gap_mean_s"]
    part.figures["min start gap on a host, at the workers s"] = part.rows[0]["min_gap_at_workers_s"]
    return part
