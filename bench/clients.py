"""Peer clients run in a fresh interpreter each: `python -m bench.clients MODE --urls FILE ...`.

Modes: `requests` (one Session, sequential), `threads` (ThreadPoolExecutor(N) + requests, one Session per
thread) and `aiohttp` (one ClientSession; Semaphore(N), or no limit with `--concurrency 0`; `--limit-per-host`
makes it polite). Each first
sends `--warmup` untimed GETs to `--warmup-url`, then fetches every URL of the file and prints one JSON
line: wall_s, cpu_s (this process, all threads), pages, ok.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_requests(urls: list[str], warmup: list[str], concurrency: int) -> int:
    import requests

    session = requests.Session()
    for url in warmup:
        session.get(url, timeout=30).close()
    return _timed(lambda: sum(session.get(url, timeout=30).status_code == 200 for url in urls))


def _run_threads(urls: list[str], warmup: list[str], concurrency: int) -> int:
    import requests

    local = threading.local()

    def get(url: str) -> bool:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.get(url, timeout=30)
        return response.status_code == 200 and bool(response.content)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(get, warmup))
        return _timed(lambda: sum(pool.map(get, urls)))


async def _aiohttp(urls: list[str], warmup: list[str], concurrency: int, limit: int, per_host: int = 0) -> int:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=per_host)
    async with aiohttp.ClientSession(connector=connector) as session:
        semaphore = asyncio.Semaphore(concurrency) if concurrency > 0 else None

        async def get(url: str) -> bool:
            if semaphore is None:
                return await _get(session, url)
            async with semaphore:
                return await _get(session, url)

        await asyncio.gather(*(get(url) for url in warmup))
        _Clock.start()
        ok = sum(await asyncio.gather(*(get(url) for url in urls)))
        _Clock.stop()
        return ok


async def _get(session: Any, url: str) -> bool:
    async with session.get(url) as response:
        body = await response.read()
        return response.status == 200 and bool(body)


class _Clock:
    """The timed span: wall and CPU seconds between start() and stop()."""

    wall = cpu = 0.0

    @classmethod
    def start(cls) -> None:
        cls.wall, cls.cpu = time.perf_counter(), _cpu_s()

    @classmethod
    def stop(cls) -> None:
        cls.wall, cls.cpu = time.perf_counter() - cls.wall, _cpu_s() - cls.cpu


def _timed(body: Callable[[], int]) -> int:
    _Clock.start()
    ok = body()
    _Clock.stop()
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    parser.add_argument("mode", choices=["requests", "threads", "aiohttp"])
    parser.add_argument("--urls", type=Path, required=True, help="one URL per line")
    parser.add_argument("--concurrency", type=int, default=10, help="threads or semaphore size; 0: no limit")
    parser.add_argument("--limit", type=int, default=100, help="aiohttp connector limit (0: none)")
    parser.add_argument("--limit-per-host", type=int, default=0, help="aiohttp connector limit per host (0: none)")
    parser.add_argument("--warmup-url", default="")
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    urls = args.urls.read_text().split()
    warmup = [args.warmup_url] * args.warmup if args.warmup_url else []
    if args.mode == "requests":
        ok = _run_requests(urls, warmup, args.concurrency)
    elif args.mode == "threads":
        ok = _run_threads(urls, warmup, args.concurrency)
    else:
        crawl = _aiohttp(urls, warmup, args.concurrency, args.limit, args.limit_per_host)
        if args.uvloop:
            import uvloop

            ok = uvloop.run(crawl)
        else:
            ok = asyncio.run(crawl)
    result = {"wall_s": _Clock.wall, "cpu_s": _Clock.cpu, "pages": len(urls), "ok": ok}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
