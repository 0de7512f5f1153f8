"""A local test site of known shape, served on loopback from its own thread: it records every request
(path and headers) so tests can say exactly what was fetched and what was sent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Seen", "KnownSite", "page", "serve"]

HTML = {"Content-Type": "text/html; charset=utf-8"}
LAST_MODIFIED = "Tue, 01 Dec 2026 10:00:00 GMT"


def page(title: str, text: str, head: str = "", links: str = "") -> bytes:
    return (
        f"<!doctype html><html><head>{head}<title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p>{links}</body></html>"
    ).encode()


@dataclass(slots=True)
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class KnownSite:
    """The site's state: what it was asked, and the version of its changing pages."""

    seen: list[Seen] = field(default_factory=list)
    version: int = 1  #: /v/changing changes with it (/v/etag keeps its tag)
    url: str = ""

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def app(self) -> web.Application:
        app = web.Application()

        @web.middleware
        async def record(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
            self.seen.append(Seen(request.path_qs, dict(request.headers)))
            return await handler(request)

        app.middlewares.append(record)
        app.add_routes(
            [
                web.get("/echo", self._echo),
                web.get("/hop", self._hop),
                web.get("/v/etag", self._etag),
                web.get("/v/lm", self._last_modified),
                web.get("/v/same", self._same),
                web.get("/v/changing", self._changing),
            ]
        )
        return app

    async def _echo(self, request: web.Request) -> web.Response:
        return web.Response(body=page("Echo", "what you sent"), headers=HTML)

    async def _hop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _etag(self, request: web.Request) -> web.Response:
        tag = '"etag-v1"'
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag})
        return web.Response(body=page("ETag", "tagged"), headers={**HTML, "ETag": tag})

    async def _last_modified(self, request: web.Request) -> web.Response:
        if request.headers.get("If-Modified-Since") == LAST_MODIFIED:
            return web.Response(status=304)
        return web.Response(body=page("LM", "fixed"), headers={**HTML, "Last-Modified": LAST_MODIFIED})

    async def _same(self, request: web.Request) -> web.Response:
        return web.Response(body=page("Same", "always the same"), headers=HTML)

    async def _changing(self, request: web.Request) -> web.Response:
        return web.Response(body=page("Changing", f"version {self.version}"), headers=HTML)


@contextmanager
def serve(site: KnownSite, host: str = "127.0.0.1") -> Iterator[KnownSite]:
    """Serve `site` on `host` (a free port) from a thread, so worker processes can reach it."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(site.app(), access_log=None)
    loop.run_until_complete(runner.setup())
    tcp = web.TCPSite(runner, host, 0)
    loop.run_until_complete(tcp.start())
    site.url = f"http://{host}:{runner.addresses[0][1]}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
