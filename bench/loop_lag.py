"""Event-loop lag of a fetcher while it parses 2 MB HTML pages among small ones.

One `Fetcher` (content extraction on) fetches 40 pages of 2 MB and 400 of 2 KiB, 20 at a time, from a
local aiohttp server in another process; a ticker task asks to wake every 1 ms and records how late it
woke. Run twice: large pages parsed off the loop (the default, above `OFF_LOOP_BYTES`) and, for
comparison, everything parsed on the loop; then both again for a batch that follows links, whose pages
are parsed whole (without links, a long page is parsed only to its first 32 KiB when that holds its
title and snippet, so a 2 MB page costs little even on the loop).

    python -m bench.loop_lag
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time

import workers.content as content
from bench.procs import free_port
from crawlq.settings import Settings
from workers.fetcher import Fetcher, RequestSpec

__all__ = ["main"]

SERVER = """
import sys
from aiohttp import web
big = (b"<!doctype html><html><head><title>Big</title></head><body>"
       + b"<div><p>para graph text &amp; more <a href='/x'>link</a></p></div>\\n" * 30000 + b"</body></html>")
small = b"<!doctype html><html><head><title>Small</title></head><body><p>" + b"x " * 1000 + b"</p></body></html>"
async def page(request):
    return web.Response(body=big if request.match_info["kind"] == "big" else small, content_type="text/html")
app = web.Application()
app.add_routes([web.get("/{kind}/{n}", page)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def ticker(lags_ms: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        due = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        lags_ms.append(max(0.0, (time.perf_counter() - due) * 1000))


async def measure(base: str, off_loop_bytes: int, links: bool = False) -> dict[str, float]:
    content.OFF_LOOP_BYTES = off_loop_bytes
    fetcher = Fetcher(Settings(allow_private=True, robots_enabled=False, _env_file=None))
    await fetcher.start()
    urls = [f"{base}/big/{n}" if n % 11 == 0 else f"{base}/small/{n}" for n in range(440)]
    slots = asyncio.Semaphore(20)

    async def one(url: str) -> bool:
        async with slots:
            attempt = await fetcher.fetch(url, request=RequestSpec(links=links))
            return attempt.ok and attempt.content is not None and attempt.content.title is not None

    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    started = time.perf_counter()
    ok = await asyncio.gather(*(one(url) for url in urls))
    wall_s = time.perf_counter() - started
    stop.set()
    await tick
    await fetcher.close()
    assert all(ok)
    lags.sort()
    return {
        "pages": len(urls),
        "wall_s": round(wall_s, 2),
        "lag_max_ms": round(lags[-1], 1),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99)], 2),
        "lag_median_ms": round(statistics.median(lags), 2),
    }


async def run() -> dict[str, object]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        await asyncio.sleep(1.5)
        base = f"http://127.0.0.1:{port}"
        default = content.OFF_LOOP_BYTES
        return {
            f"off the loop above {default} bytes": await measure(base, default),
            "all on the loop": await measure(base, 1 << 40),
            f"off the loop above {default} bytes (again)": await measure(base, default),
            f"links wanted: off the loop above {default} bytes": await measure(base, default, links=True),
            "links wanted: all on the loop": await measure(base, 1 << 40, links=True),
        }
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    print(json.dumps(asyncio.run(run()), indent=1))


if __name__ == "__main__":
    main()
