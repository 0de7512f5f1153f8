"""Part `headofline` (issue 11, target 6): one big slow host in the same batch as many small hosts.

The user shape: a crawl where one site holds a large share of the URLs and answers slowly, beside a long
tail of small sites; the big site must run at its limit without holding the others up. Workload, measured
side by side in one round (`bench.hosts_target`, default politeness: 2 in flight per host, no delay,
robots.txt on, 2 workers x concurrency 100):
- many-host part: `headofline_other_urls` instant pages over `headofline_other_hosts` hosts (10,000 over
  500 in the full profile; 2,000 over 100 in smoke), URLs round-robin;
- big host: `headofline_big_urls` pages of /page?ms=50 on one more host, limit 2, so at most
  2 / 0.05 s = 40 pages/s. The issue's 10,000 big-host URLs would take 250 s at that rate; the full profile
  uses 800 (20 s), which still outlasts the many-host part several times over.
The many-host part runs alone before and after (the mean of the two is "alone"); between them one batch
holds both, the big host's URLs spread evenly through the many-host ones. Each many-host finish is
submit start to its last fetch end (stored results' fetched_at). The big host's rate is its pages finished
between its first fetch start and the many-host part's finish ("while the others ran"), and over its whole
run, each against its limit of 40 pages/s.

The rate while the others ran is split in two (`slot_use`): how much of the time the big host's two slots
held a fetch (the frontier's share), and how long each fetch took against the server's 50 ms. The fetch
time is split again with the target's own record of each delayed request (`fetch_split`): to the server's
handler, in it, and back to the worker. While the many-host part saturates the machine's cores, both the
target's loop and the workers' loops run late, and these figures say by how much each.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from bench.cluster import BatchRun, FetchSpan, fetch_spans, own_server, running_cluster, timed_batch
from bench.context import Bench, PartRound
from bench.hosts_target import host_address, urls_round_robin
from bench.parts.manyhosts import hosts_target, manyhosts_settings, take_served
from bench.workload import run_tag
from crawlq_local.cluster import LocalCluster

__all__ = ["fetch_split", "interleave", "run", "slot_use"]

WORKERS = 2
CONCURRENCY = 100
PER_HOST = 2
BIG_DELAY_MS = 50
BIG_LIMIT_PAGES_PER_S = PER_HOST / (BIG_DELAY_MS / 1000)


def interleave(many: list[str], few: list[str]) -> list[str]:
    """`few` spread evenly through `many` (each list keeps its order)."""
    placed = [(i / len(many), url) for i, url in enumerate(many)] + [(i / len(few), url) for i, url in enumerate(few)]
    return [url for _, url in sorted(placed, key=lambda pair: pair[0])]


def slot_use(spans: list[FetchSpan], start_s: float, end_s: float) -> tuple[float, float]:
    """The host's slot occupancy over [start_s, end_s] (fetch time inside it / (limit x its length)) and the
    mean duration in ms of the fetches that ended inside it. The big host's rate against its limit is the
    product of the occupancy and server delay / mean fetch: the first is the frontier's share (a slot left
    empty between fetches), the second the fetch's own (a loaded client or server reading late)."""
    inside = sum(max(0.0, min(span.end_s, end_s) - max(span.start_s, start_s)) for span in spans)
    ended = [span.end_s - span.start_s for span in spans if start_s <= span.end_s <= end_s]
    mean_ms = 1000 * sum(ended) / len(ended) if ended else 0.0
    return inside / (PER_HOST * (end_s - start_s)), mean_ms


def fetch_split(
    spans: list[FetchSpan], served: list[tuple[str, str, float, float]], host: str, start_s: float, end_s: float
) -> dict[str, float]:
    """Where the host's fetches that ended inside [start_s, end_s] spent their time, mean ms each: from the
    worker's request start to the server's handler start (`to_server_ms`: the worker sending, the server's
    loop reading), in the handler (`at_server_ms`: the delay and the server's timer lag), and from the
    handler's end to the worker's fetch end (`back_ms`: the server writing, the worker's loop reading and
    describing). Fetches are matched on their `i` parameter; one ms of rounding is in the worker's times."""
    by_id = {i: (begin, finish) for name, i, begin, finish in served if name.startswith(host)}
    split = {"to_server_ms": 0.0, "at_server_ms": 0.0, "back_ms": 0.0}
    matched = 0
    for span in spans:
        found = by_id.get(parse_qs(urlsplit(span.url).query).get("i", [""])[0])
        if found is None or not start_s <= span.end_s <= end_s:
            continue
        matched += 1
        split["to_server_ms"] += found[0] - span.start_s
        split["at_server_ms"] += found[1] - found[0]
        split["back_ms"] += span.end_s - found[1]
    return {name: round(1000 * total / matched, 1) if matched else 0.0 for name, total in split.items()}


async def _finish_s(cluster: LocalCluster, run: BatchRun, big_host: str) -> tuple[float, list[FetchSpan]]:
    """Submit start to the last many-host fetch end, and the big host's spans."""
    spans = await fetch_spans(cluster, run.stats.batch)
    others = [span.end_s for span in spans if f"//{big_host}:" not in span.url]
    return max(others) - run.started_epoch_s, [span for span in spans if f"//{big_host}:" in span.url]


async def run(bench: Bench) -> PartRound:
    profile = bench.profile
    hosts, big_count = profile.headofline_other_hosts, profile.headofline_big_urls
    big_host = host_address(hosts)
    part = PartRound(
        detail={
            "settings": f"crawlq: {WORKERS} workers x concurrency {CONCURRENCY}, {PER_HOST} per host, robots.txt on;"
            f" {profile.headofline_other_urls:,} instant pages over {hosts} hosts + {big_count:,} pages of "
            f"{BIG_DELAY_MS} ms on {big_host}"
        }
    )
    async with hosts_target(hosts + 1) as (port, target_pid), own_server() as server:
        warmup = urls_round_robin(port, hosts + 1, hosts + 1, run_tag())
        groups = {"redis": [server.pid or 0], "target": [target_pid]}
        log_dir = bench.log_dir("headofline")
        async with running_cluster(manyhosts_settings(), WORKERS, server, log_dir, warmup) as cluster:

            async def alone_s() -> float:
                others = urls_round_robin(port, hosts, profile.headofline_other_urls, run_tag())
                return (await _finish_s(cluster, await timed_batch(cluster, others, groups), big_host))[0]

            alone = [await alone_s()]
            big = urls_round_robin(port, 1, big_count, run_tag(), first=hosts, query=f"ms={BIG_DELAY_MS}&")
            others = urls_round_robin(port, hosts, profile.headofline_other_urls, run_tag())
            both = await timed_batch(cluster, interleave(others, big), groups)
            together, big_spans = await _finish_s(cluster, both, big_host)
            served = await take_served(port)
            alone.append(await alone_s())
    part.rows.append({"mode": "many-host part with the big host", "finish_s": round(together, 3)})
    mean_alone_s = sum(alone) / len(alone)
    first_start = min(span.start_s for span in big_spans)
    others_end = both.started_epoch_s + together
    during = sum(1 for span in big_spans if span.end_s <= others_end) / (others_end - first_start)
    busy, fetch_ms = slot_use(big_spans, first_start, others_end)
    split = fetch_split(big_spans, served, big_host, first_start, others_end)
    whole = len(big_spans) / (max(span.end_s for span in big_spans) - first_start)
    part.rows.insert(0, {"mode": "many-host part alone (mean of before and after)", "finish_s": round(mean_alone_s, 3)})
    part.rows[0] |= {"finish_before_s": round(alone[0], 3), "finish_after_s": round(alone[1], 3)}
    part.rows.append(
        {
            "mode": f"big host, limit {PER_HOST} x {BIG_DELAY_MS} ms",
            "pages_per_s_while_others_ran": round(during, 2),
            "slots_busy_while_others_ran": round(busy, 4),
            "fetch_ms_while_others_ran": round(fetch_ms, 1),
            **split,
            "pages_per_s_whole_run": round(whole, 2),
            "limit_pages_per_s": BIG_LIMIT_PAGES_PER_S,
            "batch_wall_s": round(both.wall_s, 3),
        }
    )
    part.figures["many-host finish, with big host / alone"] = round(together / mean_alone_s, 4)
    part.figures["big host rate / limit, while others ran"] = round(during / BIG_LIMIT_PAGES_PER_S, 4)
    part.figures["big host rate / limit, whole run"] = round(whole / BIG_LIMIT_PAGES_PER_S, 4)
    part.figures["big host slots busy, while others ran"] = round(busy, 4)
    part.figures["big host fetch ms / server delay, while others ran"] = round(fetch_ms / BIG_DELAY_MS, 4)
    for name, value in split.items():
        part.figures[f"big host fetch {name.removesuffix('_ms')} ms, while others ran"] = value
    part.figures["many-host finish alone s"] = round(mean_alone_s, 3)
    return part
