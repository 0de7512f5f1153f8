"""The local target site: an aiohttp app of httpbin-like and hostile endpoints that records what it saw.

Used by the demo, the tests and the benchmarks; it never needs the internet and binds only to loopback
addresses (127.0.0.0/8 and ::1, so several sites can run at once on 127.0.0.2, 127.0.0.3, ... on Linux).

Routes (GET; HEAD works too): /ok, /page/{n}, /fast, /delay?ms=N, /delay/{seconds}, /status/{code},
/flaky/{key}?fails=2&status=500, /retry-after/{key}?status=429&after=2&form=seconds|date&fails=1,
/slow-drip?interval=0.25&total=400, /huge?mib=1024, /gzip-bomb?mib=300, /redirect/{n}, /redirect-loop/{n},
/redirect-to?url=X&status=302, /encoding/{bad-utf8|bogus-charset|none}, /reset, /truncated, /hang?s=60,
/robots.txt, and the uncounted /__stats (JSON) and /__reset.

Every request except /__stats and /__reset goes through an instrumentation middleware that updates the
`SiteStats` stored under `app[STATS_KEY]`. Handlers are cancelled when their client disconnects, so the
in-flight counters also drop for abandoned /hang, /slow-drip and /huge requests.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.utils
import functools
import ipaddress
import math
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["STATS_KEY", "SiteStats", "TargetSite", "ThreadedTargetSite", "main", "make_app"]

_UNCOUNTED_PATHS = frozenset({"/__stats", "/__reset"})
_MIB = 1 << 20
_HUGE_CHUNK = bytes(64 * 1024)
_MAX_DELAY_S = 30.0
_MAX_HANG_S = 60.0
_SHUTDOWN_GRACE_S = 0.5  # stop() cancels handlers still running after this (e.g. /hang)
_THREAD_TIMEOUT_S = 10.0
_HTML = "text/html; charset=utf-8"


class SiteStats:
    """What the site observed. Mutated only on the site's event loop; `reset()` clears it."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._host_in_flight: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything observed; requests being served now stay counted in `in_flight`."""
        self.hits: collections.Counter[str] = collections.Counter()  # path (no query) -> requests
        self.total = 0
        self.max_in_flight = self.in_flight
        self.starts: list[float] = []  # time.monotonic() at each request start
        self.per_host_max_in_flight: dict[str, int] = {h: n for h, n in self._host_in_flight.items() if n}
        self.key_hits: collections.Counter[str] = collections.Counter()  # /flaky and /retry-after keys
        self.key_times: dict[str, list[float]] = {}  # key -> time.monotonic() of each request

    def request_started(self, path: str, host: str) -> None:
        self.hits[path] += 1
        self.total += 1
        self.starts.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        host_in_flight = self._host_in_flight.get(host, 0) + 1
        self._host_in_flight[host] = host_in_flight
        self.per_host_max_in_flight[host] = max(self.per_host_max_in_flight.get(host, 0), host_in_flight)

    def request_finished(self, host: str) -> None:
        self.in_flight -= 1
        self._host_in_flight[host] -= 1

    def record_key(self, key: str) -> int:
        """Count one request for a /flaky or /retry-after key; return how many that key has seen."""
        self.key_hits[key] += 1
        self.key_times.setdefault(key, []).append(time.monotonic())
        return self.key_hits[key]

    def min_gap_s(self) -> float | None:
        """The smallest gap between consecutive request starts, or None below two requests."""
        ordered = sorted(self.starts)
        return min((b - a for a, b in zip(ordered, ordered[1:], strict=False)), default=None)

    def as_dict(self) -> dict[str, object]:
        return {
            "hits": dict(self.hits),
            "total": self.total,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "per_host_max_in_flight": dict(self.per_host_max_in_flight),
            "min_gap_s": self.min_gap_s(),
            "key_hits": dict(self.key_hits),
            "key_times": {key: list(times) for key, times in self.key_times.items()},
        }


STATS_KEY = web.AppKey("crawlq_target_stats", SiteStats)


def _html_page(title: str, body: str = "") -> bytes:
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body><h1>{title}</h1>\n{body}</body></html>\n"
    ).encode()


def _padded_page(size: int) -> bytes:
    filler = "crawlq target page: steady bytes for latency and throughput runs. "
    bare = len(_html_page("crawlq target", "<p></p>\n"))
    return _html_page("crawlq target", f"<p>{(filler * size)[: size - bare]}</p>\n")


_PAGE_2K = _padded_page(2048)


def _host_part(host: str) -> str:
    """The host of a Host header value: `127.0.0.2:8080` -> `127.0.0.2`, `[::1]:80` -> `::1`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


@web.middleware
async def _instrument(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _UNCOUNTED_PATHS:
        return await handler(request)
    stats = request.app[STATS_KEY]
    host = _host_part(request.host)
    stats.request_started(request.path, host)
    try:
        return await handler(request)
    finally:
        stats.request_finished(host)


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A finite query number clamped to [low, high]; 400 if it is not a number."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number\n") from None
    if not math.isfinite(value):
        raise web.HTTPBadRequest(text=f"{name} must be finite\n")
    return min(max(value, low), high)


def _status(raw: str, low: int = 100, high: int = 599) -> int:
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise web.HTTPBadRequest(text=f"status must be an integer in {low}..{high}\n")
    return int(raw)


def _html(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": _HTML})


async def _ok(request: web.Request) -> web.Response:
    return _html(_html_page("ok"))


async def _page(request: web.Request) -> web.Response:
    number = request.match_info["n"]
    return _html(_html_page(f"page {number}", f'<p><a href="/page/{int(number) + 1}">next</a></p>\n'))


async def _fast(request: web.Request) -> web.Response:
    return web.Response(body=_PAGE_2K, headers={"Content-Type": _HTML})


async def _delay_ms(request: web.Request) -> web.Response:
    await asyncio.sleep(_number(request, "ms", 0.0, 0.0, _MAX_DELAY_S * 1000) / 1000)
    return web.Response(body=_PAGE_2K, headers={"Content-Type": _HTML})


async def _delay_seconds(request: web.Request) -> web.Response:
    try:
        delay_s = float(request.match_info["seconds"])
    except ValueError:
        raise web.HTTPBadRequest(text="delay must be a number of seconds\n") from None
    if not math.isfinite(delay_s):
        raise web.HTTPBadRequest(text="delay must be finite\n")
    delay_s = min(max(delay_s, 0.0), _MAX_DELAY_S)
    await asyncio.sleep(delay_s)
    return web.json_response({"delay": delay_s})


def _status_response(status: int) -> web.Response:
    """`status` with a small body where HTTP allows one; 3xx carry no Location."""
    if status < 200 or status in (204, 304):
        return web.Response(status=status)
    return web.Response(status=status, text=f"status {status}\n")


async def _status_route(request: web.Request) -> web.Response:
    return _status_response(_status(request.match_info["code"]))


async def _flaky(request: web.Request) -> web.Response:
    fails = _number(request, "fails", 2, 0, 1e9)
    status = _status(request.query.get("status", "500"))
    seen = request.app[STATS_KEY].record_key(request.match_info["key"])
    return _status_response(status) if seen <= fails else _html(_html_page("recovered"))


async def _retry_after(request: web.Request) -> web.Response:
    status = _status(request.query.get("status", "429"))
    after_s = math.ceil(_number(request, "after", 2, 0, 86400))
    fails = _number(request, "fails", 1, 0, 1e9)
    form = request.query.get("form", "seconds")
    if form not in ("seconds", "date"):
        raise web.HTTPBadRequest(text="form must be seconds or date\n")
    if request.app[STATS_KEY].record_key(request.match_info["key"]) > fails:
        return _html(_html_page("come in"))
    response = _status_response(status)
    if form == "seconds":
        response.headers["Retry-After"] = str(after_s)
    else:
        when = datetime.now(UTC) + timedelta(seconds=after_s)
        response.headers["Retry-After"] = email.utils.format_datetime(when, usegmt=True)
    return response


async def _stream(request: web.Request, chunks: Iterable[bytes], interval_s: float = 0.0) -> web.StreamResponse:
    """Send headers at once, then `chunks` (chunked, no Content-Length), `interval_s` apart; stop on disconnect."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for chunk in chunks:
            if interval_s:
                await asyncio.sleep(interval_s)
            await response.write(chunk)
    except ConnectionResetError:
        pass  # the client left; aiohttp drops the connection quietly
    return response


async def _slow_drip(request: web.Request) -> web.StreamResponse:
    interval_s = _number(request, "interval", 0.25, 0.0, 60.0)
    total = int(_number(request, "total", 400, 0, 1e9))
    return await _stream(request, (b"." for _ in range(total)), interval_s)


async def _huge(request: web.Request) -> web.StreamResponse:
    mib = int(_number(request, "mib", 1024, 0, 1 << 20))
    return await _stream(request, (_HUGE_CHUNK for _ in range(mib * _MIB // len(_HUGE_CHUNK))))


@functools.lru_cache(maxsize=8)
def _gzip_of_zeros(mib: int) -> bytes:
    """gzip of `mib` MiB of zeros, compressed one MiB at a time (300 MiB -> about 300 KB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(_MIB)
    parts = [compressor.compress(zeros) for _ in range(mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


async def _gzip_bomb(request: web.Request) -> web.Response:
    mib = int(_number(request, "mib", 300, 0, 4096))
    body = await asyncio.to_thread(_gzip_of_zeros, mib)
    return web.Response(body=body, headers={"Content-Type": _HTML, "Content-Encoding": "gzip"})


def _redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


async def _redirect_loop(request: web.Request) -> web.Response:
    return _redirect(f"/redirect-loop/{(int(request.match_info['n']) + 1) % 3}")


async def _redirect_hops(request: web.Request) -> web.Response:
    hops = int(request.match_info["n"])
    if hops == 0:
        return _html(_html_page("redirects done"))
    return _redirect("/ok" if hops == 1 else f"/redirect/{hops - 1}")


async def _redirect_to(request: web.Request) -> web.Response:
    location = request.query.get("url")
    if not location or "\r" in location or "\n" in location:
        raise web.HTTPBadRequest(text="url is required and must be one line\n")
    return _redirect(location, _status(request.query.get("status", "302"), 300, 399))


_ENCODINGS = {
    "bad-utf8": (
        _HTML,
        b"<html><head><title>bad utf-8</title></head><body>caf\xc3 \xff\xfe \xed\xa0\x80</body></html>",
    ),
    "bogus-charset": ("text/html; charset=no-such-charset", _html_page("bogus charset")),
    "none": ("text/html", "<html><head><title>latin-1</title></head><body>café déjà</body></html>".encode("latin-1")),
}


async def _encoding(request: web.Request) -> web.Response:
    content_type, body = _ENCODINGS.get(request.match_info["kind"], (None, b""))
    if content_type is None:
        raise web.HTTPNotFound(text=f"kinds: {', '.join(_ENCODINGS)}\n")
    return web.Response(body=body, headers={"Content-Type": content_type})


def _drop_connection(request: web.Request, *, reset: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:  # linger 0: close() sends RST, the client sees "connection reset"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.close()


async def _reset(request: web.Request) -> web.Response:
    _drop_connection(request, reset=True)
    return web.Response()  # never sent: aiohttp ignores the write to the closed connection


async def _truncated(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": _HTML})
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"<html><bod")
    await response.drain()
    _drop_connection(request, reset=False)
    return response


async def _hang(request: web.Request) -> web.Response:
    await asyncio.sleep(_number(request, "s", _MAX_HANG_S, 0.0, _MAX_HANG_S))
    return _html(_html_page("done hanging"))


def _robots(robots_txt: str | None, robots_status: int) -> Handler:
    async def robots(request: web.Request) -> web.StreamResponse:
        if robots_status >= 400 or robots_txt is None:
            return web.Response(status=404 if robots_status < 400 else robots_status, text="no robots.txt here\n")
        return web.Response(status=robots_status, text=robots_txt, content_type="text/plain")

    return robots


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS_KEY].as_dict())


async def _reset_stats(request: web.Request) -> web.Response:
    request.app[STATS_KEY].reset()
    return web.Response(text="reset\n")


def make_app(
    stats: SiteStats | None = None, *, robots_txt: str | None = None, robots_status: int = 200
) -> web.Application:
    """Build the target app; its `SiteStats` is `app[STATS_KEY]`.

    :param robots_txt: body of /robots.txt; None answers 404 (unless `robots_status` is >= 400).
    :param robots_status: status of /robots.txt; >= 400 answers that status whatever `robots_txt` is.
    """
    if not 100 <= robots_status <= 599:
        raise ValueError(f"robots_status must be in 100..599, not {robots_status}")
    app = web.Application(middlewares=[_instrument])
    app[STATS_KEY] = stats if stats is not None else SiteStats()
    app.add_routes(
        [
            web.get("/ok", _ok),
            web.get(r"/page/{n:\d+}", _page),
            web.get("/fast", _fast),
            web.get("/delay", _delay_ms),
            web.get("/delay/{seconds}", _delay_seconds),
            web.get(r"/status/{code:\d+}", _status_route),
            web.get("/flaky/{key}", _flaky),
            web.get("/retry-after/{key}", _retry_after),
            web.get("/slow-drip", _slow_drip),
            web.get("/huge", _huge),
            web.get("/gzip-bomb", _gzip_bomb),
            web.get(r"/redirect-loop/{n:\d+}", _redirect_loop),
            web.get(r"/redirect/{n:\d+}", _redirect_hops),
            web.get("/redirect-to", _redirect_to),
            web.get("/encoding/{kind}", _encoding),
            web.get("/reset", _reset),
            web.get("/truncated", _truncated),
            web.get("/hang", _hang),
            web.get("/robots.txt", _robots(robots_txt, robots_status)),
            web.get("/__stats", _stats),
            web.get("/__reset", _reset_stats),
        ]
    )
    return app


def _loopback_host(host: str) -> str:
    address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host.strip("[]"))
    if not address.is_loopback:
        raise ValueError(f"the target site binds only to loopback addresses, not {host!r}")
    return str(address)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class TargetSite:
    """Serves `make_app(...)` on a loopback host and port from the current event loop.

    :param port: 0 picks a free port; read `port` after `start()`.
    :param stats: share one `SiteStats` between sites (per-host counters are keyed by the Host header).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        stats: SiteStats | None = None,
        robots_txt: str | None = None,
        robots_status: int = 200,
    ) -> None:
        self.host = _loopback_host(host)
        self.port = port
        self.stats = stats if stats is not None else SiteStats()
        self.app = make_app(self.stats, robots_txt=robots_txt, robots_status=robots_status)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the target site is already started")
        sock = _bind(self.host, self.port)
        runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE_S, access_log=None)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> TargetSite:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    def url(self, path: str) -> str:
        """`http://HOST:PORT` + path, e.g. `site.url("/delay?ms=50")`."""
        if not self.port:
            raise RuntimeError("start the target site before asking for its URLs")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"


class ThreadedTargetSite:
    """A `TargetSite` on its own event loop in a daemon thread, for synchronous code.

    `stats` is written by that thread; read it between requests, and reset it through /__reset.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        stats: SiteStats | None = None,
        robots_txt: str | None = None,
        robots_status: int = 200,
    ) -> None:
        self._site = TargetSite(host, port, stats=stats, robots_txt=robots_txt, robots_status=robots_status)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._site.host

    @property
    def port(self) -> int:
        return self._site.port

    @property
    def stats(self) -> SiteStats:
        return self._site.stats

    def url(self, path: str) -> str:
        return self._site.url(path)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the target site is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"target-site-{self.host}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._site.start(), loop).result(_THREAD_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._site.stop(), loop).result(_THREAD_TIMEOUT_S)
            asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(_THREAD_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_THREAD_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> ThreadedTargetSite:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


async def _serve(site: TargetSite) -> None:
    async with site:
        print(f"crawlq target site serving on {site.url('/')} (Ctrl-C stops)", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """`python -m crawlq_local.target --host 127.0.0.1 --port 8080`: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m crawlq_local.target", description="Serve the crawlq target site.")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default 8080)")
    parser.add_argument("--robots-txt", type=Path, help="serve this file as /robots.txt (default: 404)")
    args = parser.parse_args(argv)
    robots_txt = args.robots_txt.read_text() if args.robots_txt else None
    try:
        site = TargetSite(args.host, args.port, robots_txt=robots_txt)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(site))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
