"""Part 4 (target 3), submit: `crawlq submit FILE --json` as a subprocess against a fresh embedded server,
timed as the whole process (interpreter start and imports included). No worker runs meanwhile.
For reference, `crawlq --version` (start-up and imports alone) is timed too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.cluster import own_server
from bench.context import Bench, PartRound
from bench.procs import ROOT, cpu_ms_per_page, cpu_seconds
from bench.workload import fast_urls, run_tag

__all__ = ["crawlq_command", "run"]


def crawlq_command() -> list[str]:
    """The `crawlq` console script next to this interpreter, else `python -m crawlq_cli`."""
    script = Path(sys.executable).parent / "crawlq"
    return [str(script)] if script.exists() else [sys.executable, "-m", "crawlq_cli"]


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    return time.perf_counter() - started, done


def _children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (the `crawlq submit` subprocess once it has exited)."""
    times = os.times()
    return times.children_user + times.children_system


async def run(bench: Bench) -> PartRound:
    part = PartRound()
    count = bench.profile.submit_urls
    path = bench.url_file("submit", fast_urls(bench.target.base, count, run_tag()))
    async with own_server() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLQ_")}
        env["CRAWLQ_REDIS_URL"] = server.url
        startup_s, _ = _timed([*crawlq_command(), "--version"], env)
        redis_before, children_before = cpu_seconds(server.pid or 0), _children_cpu_s()
        wall_s, done = _timed([*crawlq_command(), "submit", str(path), "--json"], env)
        cpu = {"producer": _children_cpu_s() - children_before, "redis": cpu_seconds(server.pid or 0) - redis_before}
    if done.returncode != 0:
        raise RuntimeError(f"crawlq submit exited {done.returncode}: {done.stderr.strip()[-300:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["queued"] != count:
        raise RuntimeError(f"crawlq submit queued {report['queued']} of {count}")
    part.rows.append(
        {
            "mode": "crawlq submit FILE --json",
            "urls": count,
            "wall_s": round(wall_s, 3),
            "urls_per_s": round(count / wall_s, 1),
            "startup_s": round(startup_s, 3),
            "urls_per_s_after_startup": round(count / max(1e-6, wall_s - startup_s), 1),
            **cpu_ms_per_page(cpu, count),
        }
    )
    part.figures["producer cpu_ms/URL"] = part.rows[0]["producer_cpu_ms_per_page"]
    part.figures["redis cpu_ms/URL"] = part.rows[0]["redis_cpu_ms_per_page"]
    part.figures["submit urls/s"] = part.rows[0]["urls_per_s"]
    part.figures["submit wall_s"] = part.rows[0]["wall_s"]
    part.figures["crawlq --version s"] = part.rows[0]["startup_s"]
    return part
