"""The sizes of every part for `--smoke` and `--full`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "PARTS", "SMOKE", "Profile"]

#: every part, in the order a round runs them
PARTS = (
    "classic",
    "throughput",
    "manyhosts",
    "latency",
    "submit",
    "scaleout",
    "memory",
    "idle",
    "rediscost",
    "slowservers",
    "priority",
    "hostdelay",
    "headofline",
    "hostscale",
)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    rounds: int
    classic_urls: int  #: /delay URLs of the sync/threads/asyncio table
    throughput_urls: int  #: distinct /fast URLs of target 1
    latency_urls: int  #: /delay URLs of target 2
    latency_bare_urls: int  #: /delay URLs for bare aiohttp Semaphore(10) beside target 2
    latency_cpu_urls: int  #: /delay URLs of each of the latency part's CPU batches (issue 9's CPU per page)
    latency_cpu_pairs: int  #: CPU batches, alternated with the same-shape bare baseline (bench/parts/latency.py)
    submit_urls: int  #: URLs in the file given to `crawlq submit` (target 3)
    scaleout_urls_per_worker: int  #: /delay?ms=100 URLs per worker (target 4, weak scaling)
    memory_urls: int  #: /fast URLs crawled by one worker while its RSS is sampled (target 5)
    producer_memory_urls: tuple[int, ...]  #: sizes of the files given to `crawlq submit` for its peak RSS (issue 9)
    idle_s: float  #: how long the idle worker is watched (target 6)
    pickup_trials: int  #: 1-URL batches timed from submit to result (target 6)
    rediscost_urls: int  #: /fast URLs whose Redis commands are counted (target 7)
    manyhosts_urls: int  #: URLs per many-host shape: over 64 hosts, and 20 per host (issue 11)
    slow_urls: int  #: fetches in flight at once to the slow target (issue 9: a waiting worker's CPU)
    slow_delay_s: float  #: how long the slow target takes to answer each of them
    slow_window_s: float  #: how long the waiting worker's CPU is measured
    priority_low_urls: int  #: the low-priority batch running when the high one is submitted (issue 11)
    priority_high_urls: int  #: the high-priority batch, and each of the two equal-priority batches
    hostdelay_hosts: int  #: hosts crawled with per_host_delay_s (issue 11, target 5)
    hostdelay_urls_per_host: int
    headofline_big_urls: int  #: /page?ms=50 URLs on the one big host (issue 11, target 6)
    headofline_other_urls: int  #: instant URLs spread over the other hosts
    headofline_other_hosts: int
    hostscale_urls_per_worker: int  #: many-host /page?ms=100 URLs per worker (issue 11, target 7, weak scaling)
    hostscale_kill_urls: int  #: the batch during which one of the workers is SIGKILLed
    install: bool  #: pip-install missing optional peers (Scrapy)
    scrapy_variants: tuple[int, ...]  #: CONCURRENT_ITEMS values to run Scrapy with
    quiet_wait_s: float  #: before each part, wait up to this long for other programs to go quiet


SMOKE = Profile(
    name="smoke",
    rounds=1,
    classic_urls=40,
    throughput_urls=2_000,
    latency_urls=300,
    latency_bare_urls=100,
    latency_cpu_urls=300,
    latency_cpu_pairs=2,
    submit_urls=10_000,
    scaleout_urls_per_worker=60,
    memory_urls=5_000,
    producer_memory_urls=(10_000, 50_000),
    idle_s=2.0,
    pickup_trials=3,
    rediscost_urls=2_000,
    manyhosts_urls=5_000,
    slow_urls=1_000,
    slow_delay_s=4.0,
    slow_window_s=1.5,
    priority_low_urls=10_000,
    priority_high_urls=1_000,
    hostdelay_hosts=50,
    hostdelay_urls_per_host=5,
    headofline_big_urls=120,
    headofline_other_urls=2_000,
    headofline_other_hosts=100,
    hostscale_urls_per_worker=200,
    hostscale_kill_urls=0,
    install=False,
    scrapy_variants=(100,),
    quiet_wait_s=0.0,
)

FULL = Profile(
    name="full",
    rounds=3,
    classic_urls=200,
    throughput_urls=20_000,
    latency_urls=2_000,
    latency_bare_urls=2_000,
    latency_cpu_urls=6_000,
    latency_cpu_pairs=3,
    submit_urls=100_000,
    scaleout_urls_per_worker=600,
    memory_urls=100_000,
    producer_memory_urls=(1_000_000, 5_000_000),
    idle_s=5.0,
    pickup_trials=10,
    rediscost_urls=20_000,
    manyhosts_urls=20_000,
    slow_urls=1_000,
    slow_delay_s=12.0,
    slow_window_s=6.0,
    priority_low_urls=100_000,
    priority_high_urls=5_000,
    hostdelay_hosts=200,
    hostdelay_urls_per_host=10,
    headofline_big_urls=800,
    headofline_other_urls=10_000,
    headofline_other_hosts=500,
    hostscale_urls_per_worker=600,
    hostscale_kill_urls=4_000,
    install=True,
    scrapy_variants=(100, 1),
    quiet_wait_s=60.0,
)
