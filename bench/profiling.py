"""`--profile-worker`: one extra crawlq throughput run (not in the rounds) with py-spy sampling worker 0.

Writes `worker-profile.raw` (py-spy's collapsed stacks) and `worker-profile.txt` (top functions by own
and by total samples) to the output directory, and returns the same tables for results.json.
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
from bench.parts.throughput import CONCURRENCY, WORKERS
from bench.workload import fast_urls, run_tag

__all__ = ["run", "top_functions"]

RATE_HZ = 250
TOP = 30


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


async def run(bench: Bench) -> dict[str, Any]:
    py_spy = _py_spy()
    if py_spy is None:
        return {"skipped": "py-spy is not installed and could not be installed"}
    raw_path = bench.out_dir / "worker-profile.raw"
    count = bench.profile.throughput_urls
    settings = crawlq_settings(CONCURRENCY, WORKERS)
    warmup = fast_urls(bench.target.base, 400, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, WORKERS, server, bench.log_dir("profile"), warmup) as cluster,
    ):
        pid = cluster.processes[0].pid
        command = [py_spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw", "--idle"]
        spy = subprocess.Popen(
            [*command, "--nonblocking", "-o", str(raw_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        await asyncio.sleep(1.0)
        if spy.poll() is not None:
            return {
                "skipped": f"py-spy exited: {spy.stderr.read().decode(errors='replace')[-300:] if spy.stderr else ''}"
            }
        batch = await timed_batch(cluster, fast_urls(bench.target.base, count, run_tag()), {})
        spy.send_signal(signal.SIGINT)
        await asyncio.to_thread(spy.wait, 30)
    result = top_functions(raw_path.read_text() if raw_path.exists() else "")
    result["pages_per_s_while_profiled"] = round(batch.pages_per_s, 1)
    result["worker_cpu_s"] = batch.cpu_s["workers"]
    lines = [f"py-spy {RATE_HZ} Hz, --idle, worker 0 of {WORKERS}, {count} URLs, {batch.pages_per_s:.0f} pages/s"]
    for kind in ("own", "total"):
        lines += ["", f"top by {kind} samples (of {result['samples']}):"]
        lines += [f"{percent:6.1f}%  {samples:7d}  {name}" for name, samples, percent in result[kind]]
    (bench.out_dir / "worker-profile.txt").write_text("\n".join(lines) + "\n")
    return result
