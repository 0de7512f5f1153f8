"""Part 8 (target 7), Redis cost per URL: `CONFIG RESETSTAT`, one throughput batch, `INFO commandstats`
(calls made inside Lua scripts included; the bench's own INFO, CONFIG and wait polls removed), for
crawlq (2 workers) and for plain arq one job per URL. It reads the throughput part's runs of the same
round when that part ran; otherwise it runs them itself with `rediscost_urls` URLs.

How many pages/s one Redis carries: `REDIS_COMMANDS_PER_S` (redis-benchmark without pipelining did
82-90k ops/s on this box, see peer-baselines) / commands per URL; and, measured, N / Redis CPU seconds.
"""

from __future__ import annotations

from typing import Any

from bench.context import Bench, PartRound
from bench.parts.throughput import arq_run, crawlq_run
from bench.workload import fast_urls, run_tag

__all__ = ["REDIS_COMMANDS_PER_S", "run"]

REDIS_COMMANDS_PER_S = 100_000  #: one Redis core, plain commands, no pipelining (redis-benchmark, rounded)
TOP = 8


async def _measurements(bench: Bench) -> tuple[int, dict[str, Any], dict[str, Any], str]:
    throughput = bench.done.get("throughput")
    if throughput is not None:
        detail = throughput.detail
        return detail["commands"]["urls"], detail["commands"], detail["cpu_s"], "throughput part of this round"
    count = bench.profile.rediscost_urls
    crawlq = await crawlq_run(bench, fast_urls(bench.target.base, count, run_tag()), name="rediscost")
    arq = await arq_run(bench, fast_urls(bench.target.base, count, run_tag()))
    commands = {"crawlq": crawlq.commands, "arq": arq.commands}
    return count, commands, {"crawlq": crawlq.cpu_s, "arq": arq.cpu_s}, "own runs"


async def run(bench: Bench) -> PartRound:
    count, commands, cpu_s, source = await _measurements(bench)
    part = PartRound(detail={"source": source, "urls": count})
    for system in ("crawlq", "arq"):
        calls: dict[str, int] = commands[system] or {}
        total = sum(calls.values())
        per_url = total / count
        redis_cpu_s = cpu_s[system].get("redis", 0.0)
        scripts = sum(value for name, value in calls.items() if name in ("evalsha", "eval", "fcall"))
        part.rows.append(
            {
                "mode": system,
                "urls": count,
                "commands": total,
                "commands_per_url": round(per_url, 3),
                "script_calls_per_url": round(scripts / count, 4),
                "redis_cpu_ms_per_url": round(1000 * redis_cpu_s / count, 4),
                "pages_per_s_at_100k_cmds": round(REDIS_COMMANDS_PER_S / per_url) if per_url else None,
                "pages_per_s_per_redis_core": round(count / redis_cpu_s) if redis_cpu_s else None,
                "top": ", ".join(f"{name} {value / count:.2f}" for name, value in list(calls.items())[:TOP]),
            }
        )
        part.figures[f"{system} commands/URL"] = round(per_url, 3)
        if redis_cpu_s:
            part.figures[f"{system} pages/s per Redis core (CPU)"] = round(count / redis_cpu_s)
    part.detail["commands"] = commands
    return part
