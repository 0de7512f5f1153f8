"""Part 8 (target 7), Redis cost per URL: `CONFIG RESETSTAT`, one throughput batch, `INFO commandstats`
(calls made inside Lua scripts included; the bench's own INFO, CONFIG and wait polls removed), for
crawlq (2 workers) and for plain arq one job per URL. It reads the throughput part's runs of the same
round when that part ran; otherwise it runs them itself with `rediscost_urls` URLs.

Where Redis spends its time: one more crawlq batch (its own server, SLOWLOG logging every command) gives
the server's execution time per URL of each Lua script (commands a script runs are in its time, and are
also logged, and listed in `detail`, under their own names). Kept out of the throughput run: logging
costs Redis time.

How many pages/s one Redis carries: `REDIS_COMMANDS_PER_S` (redis-benchmark without pipelining did
82-90k ops/s on this box, see peer-baselines) / commands per URL; and, measured, N / Redis CPU seconds.
"""

from __future__ import annotations

import collections
import hashlib
from importlib.resources import files
from typing import Any

from bench.cluster import crawlq_settings, own_server, running_cluster, timed_batch
from bench.context import Bench, PartRound
from bench.parts.throughput import CONCURRENCY, WORKERS, arq_run, crawlq_run
from bench.procs import cpu_ms_per_page
from bench.workload import fast_urls, run_tag

__all__ = ["REDIS_COMMANDS_PER_S", "run", "script_names", "time_by_name"]

SCRIPTS = (("crawlq", "enqueue.lua"), ("crawlq", "commit.lua"), ("workers", "claim.lua"), ("workers", "gate.lua"))
SLOWLOG_MAX = 1_000_000

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


def script_names() -> dict[str, str]:
    """The SHA1 Redis knows each crawlq Lua script by -> its file name."""
    return {
        hashlib.sha1((files(package) / "lua" / name).read_text().encode()).hexdigest(): name
        for package, name in SCRIPTS
    }


def time_by_name(entries: list[dict[str, Any]], names: dict[str, str]) -> dict[str, int]:
    """Microseconds per script (EVALSHA by SHA1) or command, from SLOWLOG GET entries, largest first."""
    spent: collections.Counter[str] = collections.Counter()
    for entry in entries:
        words = [word.decode() if isinstance(word, bytes) else str(word) for word in entry["command"].split()[:2]]
        name = words[0].lower()
        if name == "evalsha" and len(words) > 1:
            name = names.get(words[1], "other script")
        spent[name] += int(entry["duration"])
    return dict(spent.most_common())


async def _time_by_script(bench: Bench, count: int) -> dict[str, int]:
    settings = crawlq_settings(CONCURRENCY, WORKERS)
    warmup = fast_urls(bench.target.base, 400, run_tag())
    async with (
        own_server() as server,
        running_cluster(settings, WORKERS, server, bench.log_dir("redistime"), warmup) as cluster,
    ):
        redis = cluster.client.redis
        await redis.config_set("slowlog-max-len", SLOWLOG_MAX)
        await redis.config_set("slowlog-log-slower-than", 0)
        await redis.slowlog_reset()
        await timed_batch(cluster, fast_urls(bench.target.base, count, run_tag()), {})
        await redis.config_set("slowlog-log-slower-than", -1)
        entries = await redis.slowlog_get(SLOWLOG_MAX)
    return time_by_name(entries, script_names())


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
                **cpu_ms_per_page({g: v for g, v in cpu_s[system].items() if g != "target"}, count),
                "top": ", ".join(f"{name} {value / count:.2f}" for name, value in list(calls.items())[:TOP]),
            }
        )
        part.figures[f"{system} commands/URL"] = round(per_url, 3)
        if redis_cpu_s:
            part.figures[f"{system} pages/s per Redis core (CPU)"] = round(count / redis_cpu_s)
    part.detail["commands"] = commands
    spent = await _time_by_script(bench, bench.profile.rediscost_urls)
    part.detail["redis_us_by_script"] = spent
    for _, name in SCRIPTS:
        part.figures[f"crawlq Redis us/URL, {name}"] = round(spent.get(name, 0) / bench.profile.rediscost_urls, 2)
    return part
