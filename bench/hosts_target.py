"""A plain aiohttp target that answers on many loopback hosts: `python -m bench.hosts_target --hosts N`.

Host i (0-based) is the IP literal `host_address(i)` (127.0.0.1 ... 127.0.0.250, then 127.0.1.1 ...), all on
one port. Every path answers 200 with a short body, `/robots.txt` 404 (allow all), `?ms=N` after N ms. It
prints the port on stdout once every address listens. GET /__stats on any host returns the highest
number of requests in flight seen per host since start. With `--record-starts`, the site also notes when each
request reached its handler (monotonic seconds, per host), and GET /__starts returns `{host: [t, ...]}` and
forgets them (issue 11, target 5: the gap between request starts on one host); without it the handler is
the plain one, so recording costs nothing when off. A delayed request (`?ms=N`) is always noted as
[host, its `i` parameter, handler start, handler end] (epoch seconds; the last `SERVED_KEPT`), and
GET /__served returns and forgets them (issue 11, target 6: where a slow host's fetch time goes).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time

from aiohttp import web

__all__ = ["host_address", "main", "urls_round_robin"]

BODY = b"<html><body>ok</body></html>"
SERVED_KEPT = 100_000


def host_address(index: int) -> str:
    """The loopback address of host `index` (0-based): 250 hosts per /24, starting at 127.0.0.1."""
    return f"127.0.{index // 250}.{index % 250 + 1}"


def urls_round_robin(
    port: int, hosts: int, count: int, tag: str, path: str = "/page", *, first: int = 0, query: str = ""
) -> list[str]:
    """`count` distinct URLs spread over hosts `first` ... `first + hosts - 1` in turn (URL i on host
    first + i mod hosts); `query` (e.g. "ms=50&") goes before the URL's own parameters."""
    return [f"http://{host_address(first + i % hosts)}:{port}{path}?{query}r={tag}&i={i}" for i in range(count)]


class _Site:
    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.starts: dict[str, list[float]] = {}  #: host -> handler start times, with --record-starts only
        self.served: collections.deque[tuple[str, str, float, float]] = collections.deque(maxlen=SERVED_KEPT)

    async def recorded_page(self, request: web.Request) -> web.Response:
        self.starts.setdefault(request.host, []).append(time.monotonic())
        return await self.page(request)

    async def take_starts(self, _request: web.Request) -> web.Response:
        starts, self.starts = self.starts, {}
        return web.json_response(starts)

    async def page(self, request: web.Request) -> web.Response:
        if request.path == "/robots.txt":
            return web.Response(status=404)
        if request.path == "/__stats":
            return web.json_response({"peak_in_flight": self.peak})
        if request.path == "/__served":
            served, self.served = list(self.served), collections.deque(maxlen=SERVED_KEPT)
            return web.json_response(served)
        host = request.host
        now = self.in_flight[host] = self.in_flight.get(host, 0) + 1
        if now > self.peak.get(host, 0):
            self.peak[host] = now
        try:
            delay_ms = int(request.query.get("ms", "0"))
            if delay_ms:
                start = time.time()
                await asyncio.sleep(delay_ms / 1000)
                self.served.append((host, request.query.get("i", ""), start, time.time()))
            return web.Response(body=BODY, content_type="text/html")
        finally:
            self.in_flight[host] -= 1


async def _serve(hosts: int, port: int, record_starts: bool) -> None:
    site = _Site()
    app = web.Application()
    if record_starts:
        app.router.add_route("GET", "/__starts", site.take_starts)
    app.router.add_route("GET", "/{tail:.*}", site.recorded_page if record_starts else site.page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    first = web.TCPSite(runner, host_address(0), port, backlog=1024)
    await first.start()
    port = port or first._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    for index in range(1, hosts):
        await web.TCPSite(runner, host_address(index), port, backlog=1024).start()
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts_target")
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--record-starts", action="store_true", help="note request start times (GET /__starts)")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.run(_serve(args.hosts, args.port, args.record_starts))
    except ImportError:
        asyncio.run(_serve(args.hosts, args.port, args.record_starts))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
