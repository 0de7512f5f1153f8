"""`python -m bench.instructions`: instructions per page, counted exactly, of a crawlq worker and of the bare loop.

Wall-clock and CPU-time figures on a shared VM drift by tens of percent within minutes; instruction
counts do not. Each client runs under valgrind (cachegrind, no cache simulation) twice, on `--small` and on
`--large` distinct /fast URLs, and the difference of the two totals divided by the difference in URLs is
the marginal cost of one page, with start-up and warm-up cancelled out. The crawlq worker runs with
concurrency 50 and politeness on, as in the throughput part; the bare loop is `bench.clients aiohttp`
with Semaphore(50) on uvloop (the worker's loop). Only user-space instructions are counted: system calls
(the same for both, one send and one receive per page) are not. Needs `valgrind` on PATH; ~1 minute.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cluster import crawlq_settings, own_server, wait_workers
from bench.procs import ROOT, TargetProcess
from bench.workload import fast_urls, run_tag, write_lines
from crawlq_local.cluster import LocalCluster

__all__ = ["main", "marginal", "total_instructions"]

CONCURRENCY = 50


def total_instructions(cachegrind_out: Path) -> int:
    """The total instruction count (`summary:` line) of a cachegrind output file."""
    for line in cachegrind_out.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"{cachegrind_out} has no summary line")


def marginal(small: tuple[int, int], large: tuple[int, int]) -> float:
    """Instructions per URL between two runs given as (urls, instructions)."""
    (urls_a, count_a), (urls_b, count_b) = small, large
    return (count_b - count_a) / (urls_b - urls_a)


def _valgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]


def bare_count(target: TargetProcess, urls: int, work: Path) -> int:
    url_file = write_lines(work / f"bare-{urls}.txt", fast_urls(target.base, urls, run_tag()))
    out = work / f"bare-{urls}.cachegrind"
    command = [*_valgrind(out), sys.executable, "-m", "bench.clients", "aiohttp", "--urls", str(url_file)]
    command += ["--concurrency", str(CONCURRENCY), "--limit", "0", "--uvloop"]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, timeout=1800)
    return total_instructions(out)


async def worker_count(target: TargetProcess, urls: int, work: Path) -> int:
    """One worker under valgrind: a 200-URL warm-up batch, then `urls`, then SIGTERM (it exits 0)."""
    out = work / f"worker-{urls}.cachegrind"
    async with own_server() as server:
        async with LocalCluster(crawlq_settings(CONCURRENCY, 1), workers=0, redis_url=server.url) as cluster:
            log = open(work / f"worker-{urls}.log", "wb")
            command = [*_valgrind(out), sys.executable, "-m", "workers"]
            process = subprocess.Popen(command, env=cluster.settings.child_env(), stdout=log, stderr=log, cwd=ROOT)
            cluster.processes.append(process)
            await wait_workers(cluster, 1, timeout_s=300)
            for count in (200, urls):
                report = await cluster.client.submit(fast_urls(target.base, count, run_tag()))
                stats = await cluster.client.wait(report.batch, timeout_s=1800)
                if stats.succeeded != count:
                    raise RuntimeError(f"crawlq under valgrind: {stats.succeeded} of {count} URLs succeeded")
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 300)
            cluster.processes.clear()
            log.close()
    return total_instructions(out)


async def _run(small: int, large: int, work: Path) -> dict[str, float]:
    with TargetProcess() as target:
        bare = marginal((small, bare_count(target, small, work)), (large, bare_count(target, large, work)))
        worker_small = await worker_count(target, small, work)
        worker = marginal((small, worker_small), (large, await worker_count(target, large, work)))
    return {"bare_per_url": bare, "worker_per_url": worker, "worker_over_bare": worker / bare}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=500, help="URLs of the first run (default 500)")
    parser.add_argument("--large", type=int, default=2500, help="URLs of the second run (default 2500)")
    args = parser.parse_args(argv)
    if args.large <= args.small:
        parser.error("--large must be more than --small")
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.instructions needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="crawlq-instructions-") as work:
        figures = asyncio.run(_run(args.small, args.large, Path(work)))
    print(f"bare aiohttp (Semaphore({CONCURRENCY}), uvloop): {figures['bare_per_url']:,.0f} instructions per page")
    print(f"crawlq worker (concurrency {CONCURRENCY}):     {figures['worker_per_url']:,.0f} instructions per page")
    print(f"crawlq worker / bare loop: {figures['worker_over_bare']:.3f}")


if __name__ == "__main__":
    main()
