"""`--profile-worker [throughput|latency]`: one extra crawlq run of that part's shape (not in the rounds) with
py-spy sampling both workers: instant pages, or the latency part's /delay pages (2 workers x 50 in flight).

Only on-CPU samples are kept (no `--idle`), so the shares are shares of the workers' CPU. Writes
`worker-profile.raw` (py-spy's collapsed stacks) and `worker-profile.txt` (CPU by component, then the top
functions by own and by total samples) to the output directory, and returns the same tables for
results.json.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.cluster import crawlq_settings, own_server, running_cluster, timed_batch
from bench.context import Bench
from bench.parts import latency, throughput
from bench.workload import delay_urls, delays_ms, fast_urls, run_tag

__all__ = ["components", "run", "top_functions"]

RATE_HZ = 500
QUIET: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
TOP = 30
BATCHES = 3
#: (a function name on the stack, the component it stands for), first match from the top of the list wins
COMPONENTS = (
    ("Store.commit", "result commits (tasks._commit, Store.commit, commit.lua call)"),
    ("Committer", "result commits (tasks._commit, Store.commit, commit.lua call)"),
    ("_commit", "result commits (tasks._commit, Store.commit, commit.lua call)"),
    ("owned_open_ids", "ownership check per job"),
    ("start_jobs", "claims (claim.lua)"),
    ("_poll_iteration", "polling (arq loop, waits)"),
    ("tasks.py", "per-URL tasks and job loop"),
    ("run_job", "arq per-job work (run_job)"),
    ("HostGate", "host gate"),
    ("RobotsCache", "robots.txt"),
    ("_BaseRequestContextManager", "aiohttp request and response"),
    ("ClientSession", "aiohttp request and response"),
    ("_read_body", "aiohttp request and response"),
    ("Fetcher.", "fetcher's own code (timeout, URL, address check)"),
    ("Engine.", "engine (semaphore, gate and robots calls, outcome)"),
    ("aiohttp/", "aiohttp callbacks (protocol, streams)"),
    ("asyncio/", "event loop and asyncio primitives"),
    ("arq/worker.py", "event loop (uvloop, C callbacks)"),
)


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found:
        return found
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], capture_output=True, timeout=600)
    return str(local) if done.returncode == 0 and local.exists() else None


def top_functions(raw: str, top: int = TOP) -> dict[str, Any]:
    """Own (leaf) and total (anywhere on the stack) samples per function from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        frames = [frame for frame in frames if not frame.startswith("process ") and not frame.startswith("thread ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count

    def table(counter: collections.Counter[str]) -> list[list[Any]]:
        return [[name, count, round(100 * count / samples, 1)] for name, count in counter.most_common(top)]

    return {"samples": samples, "own": table(own), "total": table(total)}


def components(raw: str) -> list[list[Any]]:
    """[component, samples, percent] from py-spy's raw output, largest first (see `COMPONENTS`)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        component = next((name for key, name in COMPONENTS if key in stack), "other")
        counts[component] += int(count_text)
    total = sum(counts.values()) or 1
    return [[name, count, round(100 * count / total, 1)] for name, count in counts.most_common()]


def _batch_urls(bench: Bench, shape: str) -> list[str]:
    if shape == "latency":
        return delay_urls(bench.target.base, delays_ms(bench.profile.latency_urls), run_tag())
    return fast_urls(bench.target.base, bench.profile.throughput_urls, run_tag())


async def run(bench: Bench, shape: str = "throughput") -> dict[str, Any]:
    py_spy = _py_spy()
    if py_spy is None:
        return {"skipped": "py-spy is not installed and could not be installed"}
    raw_path = bench.out_dir / "worker-profile.raw"
    part = latency if shape == "latency" else throughput
    concurrency, workers = part.CONCURRENCY, part.WORKERS
    settings = crawlq_settings(concurrency, workers)
    warmup = fast_urls(bench.target.base, 400, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, workers, server, bench.log_dir("profile"), warmup) as cluster,
    ):
        spies = []
        for number, process in enumerate(cluster.processes):
            command = [py_spy, "record", "--pid", str(process.pid), "--rate", str(RATE_HZ), "--format", "raw"]
            path = raw_path.with_suffix(f".{number}")
            spies.append((path, subprocess.Popen([*command, "--nonblocking", "-o", str(path)], **QUIET)))
        await asyncio.sleep(1.0)
        for _, spy in spies:
            if spy.poll() is not None:
                error = spy.stderr.read().decode(errors="replace")[-300:] if spy.stderr else ""
                return {"skipped": f"py-spy exited: {error}"}
        rates = []
        for _ in range(BATCHES):
            batch = await timed_batch(cluster, _batch_urls(bench, shape), {})
            rates.append(batch.pages_per_s)
        for _, spy in spies:
            spy.send_signal(signal.SIGINT)
        for _, spy in spies:
            await asyncio.to_thread(spy.wait, 30)
    raw_path.write_text("".join(path.read_text() for path, _ in spies if path.exists()))
    for path, _ in spies:
        path.unlink(missing_ok=True)
    raw = raw_path.read_text()
    result = top_functions(raw)
    result["components"] = components(raw)
    result["pages_per_s_while_profiled"] = [round(rate, 1) for rate in rates]
    lines = [
        f"py-spy {RATE_HZ} Hz, on-CPU samples of all {workers} workers (concurrency {concurrency}), {shape} shape, "
        f"{BATCHES} batches at {', '.join(f'{rate:.0f}' for rate in rates)} pages/s",
        "",
        "workers' CPU by component:",
    ]
    lines += [f"{percent:6.1f}%  {samples:7d}  {name}" for name, samples, percent in result["components"]]
    for kind in ("own", "total"):
        lines += ["", f"top by {kind} samples (of {result['samples']}):"]
        lines += [f"{percent:6.1f}%  {samples:7d}  {name}" for name, samples, percent in result[kind]]
    (bench.out_dir / "worker-profile.txt").write_text("\n".join(lines) + "\n")
    return result
