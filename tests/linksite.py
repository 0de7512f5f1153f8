"""A local site of known link shape for link following and sitemaps, served on loopback from a thread.

Three servers: the main site (127.0.0.1, port A), a sibling on the same host name with another port
(127.0.0.1, port B: the same domain, another host for `same-host`), and a far site (127.0.0.2: another
domain). The main site's tree, with each page's depth from `/`:

    /              0  -> /a /b, /private/x (robots: disallowed), /b/nofollow (rel=nofollow), /#top (itself),
                         B/ext, far/far, mailto:
    /a             1  -> /a/1 /a/2, / (a cycle), <link rel=next href=/b>
    /b             1  <base href=/base/> -> c (= /base/c); rel="nofollow" /b/hidden
    /a/1           2  -> /a/1/x, /a (a cycle)
    /a/2           2  <meta name=robots content=nofollow> -> /a/2/never
    /base/c        2  -> /base/c/deep
    /a/1/x         3  -> /a/1/x/y
    /base/c/deep   3  -> / (a cycle)
    /a/1/x/y       4  -> /a/1/x/y/z
    /a/1/x/y/z     5
    B/ext          1  -> B/ext/2, A/
    B/ext/2        2
    far/far        1

A generated tree for fault tests: /g is the root, /g/<i>/<j>... has `GRID_FANOUT` children each to
`GRID_DEPTH` levels, links back to /g and to its next sibling, and answers after `GRID_DELAY_S`.

Sitemaps: /sitemap_index.xml lists /sitemap-1.xml and /sitemap-2.xml.gz (gzip), which list /a, /b,
/a/1 and /base/c, /a/1/x; robots.txt names the index in a `Sitemap:` line. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["GRID_DEPTH", "LinkSites", "grid_paths", "serve_sites"]

HTML = {"Content-Type": "text/html; charset=utf-8"}
TREE_DEPTHS = {
    "/": 0, "/a": 1, "/b": 1, "/a/1": 2, "/a/2": 2, "/base/c": 2, "/a/1/x": 3, "/base/c/deep": 3,
    "/a/1/x/y": 4, "/a/1/x/y/z": 5,
}  # fmt: skip


GRID_FANOUT, GRID_DEPTH, GRID_DELAY_S = 4, 3, 0.15


def grid_paths() -> list[str]:
    """Every page of the generated tree."""
    paths, level = ["/g"], ["/g"]
    for _ in range(GRID_DEPTH):
        level = [f"{parent}/{i}" for parent in level for i in range(GRID_FANOUT)]
        paths += level
    return paths


def _grid_page(path: str) -> bytes | None:
    parts = path.split("/")[2:]
    if not all(part.isdigit() and int(part) < GRID_FANOUT for part in parts) or len(parts) > GRID_DEPTH:
        return None
    children = [f"{path}/{i}" for i in range(GRID_FANOUT)] if len(parts) < GRID_DEPTH else []
    sibling = f"{path.rpartition('/')[0]}/{(int(parts[-1]) + 1) % GRID_FANOUT}" if parts else "/g"
    return _page(path, [*children, "/g", sibling])


def _page(title: str, links: list[str], head: str = "") -> bytes:
    anchors = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    return f"<!doctype html><html><head>{head}<title>{title}</title></head><body>{anchors}</body></html>".encode()


def _urlset(urls: list[str]) -> bytes:
    rows = "".join(f"<url><loc>{url}</loc></url>" for url in urls)
    return f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{rows}</urlset>'.encode()


@dataclass
class Server:
    """One served app and the paths it was asked for (robots.txt and sitemaps apart)."""

    pages: dict[str, bytes]
    url: str = ""
    requests: list[str] = field(default_factory=list)
    extra: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)  #: non-page routes

    def app(self) -> web.Application:
        app = web.Application()

        async def handle(request: web.Request) -> web.Response:
            path = request.path
            if path in self.extra:
                body, headers = self.extra[path]
                return web.Response(body=body, headers=headers)
            if path == "/robots.txt":
                return web.Response(status=404)
            self.requests.append(path)
            if path == "/g" or path.startswith("/g/"):
                await asyncio.sleep(GRID_DELAY_S)
                grid = _grid_page(path)
                return web.Response(body=grid, headers=HTML) if grid else web.Response(status=404)
            if path not in self.pages:
                return web.Response(status=404)
            return web.Response(body=self.pages[path], headers=HTML)

        app.router.add_get("/{tail:.*}", handle)
        return app

    def counts(self) -> Counter[str]:
        return Counter(self.requests)


@dataclass
class LinkSites:
    main: Server
    sibling: Server
    far: Server

    def expected(self, scope: str, max_depth: int) -> set[str]:
        """The URLs a crawl from `main/` must reach (the module docstring's tree)."""
        urls = {self.main.url + path for path, depth in TREE_DEPTHS.items() if depth <= max_depth}
        if scope == "same-domain":
            urls |= {self.sibling.url + path for path, depth in (("/ext", 1), ("/ext/2", 2)) if depth <= max_depth}
        return urls


def _main_pages(sibling: str, far: str) -> dict[str, bytes]:
    return {
        "/": _page("Home", ["/a", "b", "/private/x", "#top", f"{sibling}/ext", f"{far}/far", "mailto:me@example.com"])
        .replace(b"</body>", b'<a rel="nofollow" href="/b/nofollow">x</a></body>'),
        "/a": _page("A", ["/a/1", "/a/2", "/"], '<link rel="next" href="/b"><link rel="stylesheet" href="/s.css">'),
        "/b": _page("B", ["c"], '<base href="/base/">')
        .replace(b"</body>", b'<a rel="x nofollow" href="/b/hidden">h</a></body>'),
        "/a/1": _page("A1", ["/a/1/x", "/a"]),
        "/a/2": _page("A2", ["/a/2/never"], '<meta name="robots" content="noindex, nofollow">'),
        "/base/c": _page("C", ["/base/c/deep"]),
        "/a/1/x": _page("X", ["/a/1/x/y"]),
        "/base/c/deep": _page("Deep", ["/"]),
        "/a/1/x/y": _page("Y", ["/a/1/x/y/z"]),
        "/a/1/x/y/z": _page("Z", []),
        "/private/x": _page("Private", []),
    }  # fmt: skip


@contextmanager
def _serving(server: Server, host: str) -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app(), access_log=None)
    loop.run_until_complete(runner.setup())
    tcp = web.TCPSite(runner, host, 0)
    loop.run_until_complete(tcp.start())
    server.url = f"http://{host}:{runner.addresses[0][1]}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def serve_sites() -> Iterator[LinkSites]:
    """The three servers; pages naming the others are filled in once every port is known."""
    main, sibling, far = Server({}), Server({}), Server({"/far": _page("Far", [])})
    with _serving(main, "127.0.0.1"), _serving(sibling, "127.0.0.1"), _serving(far, "127.0.0.2"):
        main.pages.update(_main_pages(sibling.url, far.url))
        sibling.pages.update({"/ext": _page("Ext", ["/ext/2", f"{main.url}/"]), "/ext/2": _page("Ext2", [])})
        xml = {"Content-Type": "application/xml"}
        main.extra["/robots.txt"] = (
            f"User-agent: *\nDisallow: /private/\n\nSitemap: {main.url}/sitemap_index.xml\n".encode(),
            {"Content-Type": "text/plain"},
        )
        index = "".join(
            f"<sitemap><loc>{main.url}{name}</loc></sitemap>" for name in ("/sitemap-1.xml", "/sitemap-2.xml.gz")
        )
        main.extra["/sitemap_index.xml"] = (
            f'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{index}</sitemapindex>'.encode(),
            xml,
        )
        main.extra["/sitemap-1.xml"] = (_urlset([f"{main.url}/a", f"{main.url}/b", f"{main.url}/a/1"]), xml)
        second = gzip.compress(_urlset([f"{main.url}/base/c", f"{main.url}/a/1/x"]))
        main.extra["/sitemap-2.xml.gz"] = (second, {"Content-Type": "application/octet-stream"})
        yield LinkSites(main, sibling, far)
