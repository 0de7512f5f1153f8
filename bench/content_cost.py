"""The cost of content extraction (`CRAWLQ_EXTRACT_CONTENT`) on the one-host throughput shape.

The throughput part's crawlq run (2 workers x 50, politeness on, distinct 2 KiB /fast HTML pages from the
target in its own process), with extraction off and on, alternated (off, on, off, on, ...) in one run so the
machine's drift falls on both. Prints pages/s and worker CPU per page of each run, the on/off throughput
ratio (medians) and the worker CPU cost per page in microseconds.

    python -m bench.content_cost --urls 10000 --pairs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
from pathlib import Path

from bench.cluster import crawlq_settings, own_server, running_cluster, timed_batch
from bench.procs import TargetProcess
from bench.workload import fast_urls, run_tag

__all__ = ["main"]

WORKERS = 2
CONCURRENCY = 50


async def one_run(target: TargetProcess, count: int, extract: bool, log_dir: Path) -> dict[str, float]:
    settings = crawlq_settings(CONCURRENCY, WORKERS, extract_content=extract)
    warmup = fast_urls(target.base, 400, run_tag())
    async with own_server() as server, running_cluster(settings, WORKERS, server, log_dir, warmup) as cluster:
        batch = await timed_batch(cluster, fast_urls(target.base, count, run_tag()), {"target": [target.pid]})
        sample = None
        async for result in cluster.client.results(batch.stats.batch):
            sample = result
            break
    assert batch.stats.succeeded == count, batch.stats
    assert (sample is not None and sample.content is not None) is extract
    return {
        "pages_per_s": count / batch.wall_s,
        "worker_cpu_us_per_page": 1e6 * batch.cpu_s["workers"] / count,
    }


async def run(count: int, pairs: int, workdir: Path) -> dict[str, object]:
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with TargetProcess() as target:
        for number in range(pairs):
            for mode in ("off", "on") if number % 2 == 0 else ("on", "off"):
                measured = await one_run(target, count, mode == "on", workdir / f"{mode}-{number}")
                runs[mode].append(measured)
                print(mode, {k: round(v, 1) for k, v in measured.items()}, flush=True)
    rate = {mode: statistics.median(r["pages_per_s"] for r in runs[mode]) for mode in runs}
    cpu = {mode: statistics.median(r["worker_cpu_us_per_page"] for r in runs[mode]) for mode in runs}
    return {
        "urls": count,
        "pairs": pairs,
        "pages_per_s_off": round(rate["off"], 1),
        "pages_per_s_on": round(rate["on"], 1),
        "on_over_off": round(rate["on"] / rate["off"], 3),
        "worker_cpu_us_per_page_off": round(cpu["off"], 1),
        "worker_cpu_us_per_page_on": round(cpu["on"], 1),
        "extraction_cost_us_per_page": round(cpu["on"] - cpu["off"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/content-cost"))
    args = parser.parse_args()
    for name in [name for name in os.environ if name.startswith("CRAWLQ_")]:
        del os.environ[name]
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    print(json.dumps(asyncio.run(run(args.urls, args.pairs, args.workdir))))


if __name__ == "__main__":
    main()
