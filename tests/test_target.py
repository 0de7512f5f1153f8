"""Tests of crawlq_local.target: a real server on loopback, a real aiohttp client (`requests` for the threaded site)."""

from __future__ import annotations

import asyncio
import email.utils
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import requests

from crawlq_local.target import STATS_KEY, SiteStats, TargetSite, ThreadedTargetSite, make_app

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def site() -> AsyncIterator[TargetSite]:
    async with TargetSite() as target:
        yield target


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _get(session: aiohttp.ClientSession, url: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url, allow_redirects=False, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, dict(response.headers), await response.read()


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- pages and latency routes ---


@pytest.mark.parametrize("path", ["/ok", "/page/7", "/fast", "/delay?ms=0&i=123", "/fast?i=5"])
async def test_pages_are_html_with_a_title(site: TargetSite, session: aiohttp.ClientSession, path: str) -> None:
    status, headers, body = await _get(session, site.url(path))
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b"<title>" in body and b"</html>" in body


async def test_fast_and_delay_ms_serve_the_2k_page(site: TargetSite, session: aiohttp.ClientSession) -> None:
    _, _, fast = await _get(session, site.url("/fast"))
    started = time.monotonic()
    _, _, delayed = await _get(session, site.url("/delay?ms=200&i=1"))
    assert time.monotonic() - started >= 0.2
    assert fast == delayed and 1800 <= len(fast) <= 2300


async def test_delay_seconds_sleeps_and_answers_json(site: TargetSite, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with session.get(site.url("/delay/0.2")) as response:
        assert response.status == 200
        assert await response.json() == {"delay": 0.2}
    assert 0.2 <= time.monotonic() - started < 2.0
    status, _, _ = await _get(session, site.url("/delay/soon"))
    assert status == 400


# --- statuses, flaky, retry-after ---


@pytest.mark.parametrize("code", [200, 204, 301, 302, 404, 418, 429, 500, 503, 599])
async def test_status_answers_that_code(site: TargetSite, session: aiohttp.ClientSession, code: int) -> None:
    status, headers, _ = await _get(session, site.url(f"/status/{code}"))
    assert status == code
    assert "Location" not in headers


@pytest.mark.parametrize("code", ["99", "600", "abc"])
async def test_status_out_of_range_is_rejected(site: TargetSite, session: aiohttp.ClientSession, code: str) -> None:
    status, _, _ = await _get(session, site.url(f"/status/{code}"))
    assert status in (400, 404)


async def test_flaky_fails_then_recovers_per_key(site: TargetSite, session: aiohttp.ClientSession) -> None:
    statuses = [(await _get(session, site.url("/flaky/a?fails=2&status=503")))[0] for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert (await _get(session, site.url("/flaky/b")))[0] == 500  # default fails=2, status=500; own counter
    assert site.stats.key_hits == {"a": 4, "b": 1}


async def test_retry_after_seconds(site: TargetSite, session: aiohttp.ClientSession) -> None:
    status, headers, _ = await _get(session, site.url("/retry-after/s?after=2&form=seconds"))
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert (await _get(session, site.url("/retry-after/s?after=2&form=seconds")))[0] == 200
    assert len(site.stats.key_times["s"]) == 2


async def test_retry_after_http_date(site: TargetSite, session: aiohttp.ClientSession) -> None:
    url = site.url("/retry-after/d?status=503&after=3&form=date&fails=2")
    statuses = []
    for _ in range(3):
        status, headers, _ = await _get(session, url)
        statuses.append(status)
        if status == 503:
            wait_s = (email.utils.parsedate_to_datetime(headers["Retry-After"]) - datetime.now(UTC)).total_seconds()
            assert 1.5 <= wait_s <= 3.5
    assert statuses == [503, 503, 200]
    times = site.stats.key_times["d"]
    assert len(times) == 3 and times == sorted(times)


# --- streams ---


async def test_slow_drip_sends_headers_then_bytes_slowly(site: TargetSite, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with session.get(site.url("/slow-drip?interval=0.3&total=3")) as response:
        headers_after_s = time.monotonic() - started
        assert response.status == 200 and response.headers["Transfer-Encoding"] == "chunked"
        body = await response.read()
    assert headers_after_s < 0.25
    assert len(body) == 3
    assert time.monotonic() - started >= 0.9


@pytest.mark.parametrize("path", ["/slow-drip?interval=0.02&total=100000", "/huge?mib=1024", "/hang"])
async def test_abandoned_streams_stop_on_disconnect(site: TargetSite, path: str) -> None:
    async with aiohttp.ClientSession() as client:
        if path == "/hang":
            with pytest.raises(TimeoutError):
                await client.get(site.url(path), timeout=aiohttp.ClientTimeout(total=0.3))
        else:
            async with client.get(site.url(path)) as response:
                await response.content.readexactly(3)
    await _wait_for(lambda: site.stats.in_flight == 0)
    assert site.stats.max_in_flight == 1


async def test_huge_streams_the_requested_size(site: TargetSite, session: aiohttp.ClientSession) -> None:
    async with session.get(site.url("/huge?mib=3")) as response:
        assert "Content-Length" not in response.headers
        size = 0
        async for chunk in response.content.iter_chunked(1 << 16):
            size += len(chunk)
    assert size == 3 << 20


async def test_gzip_bomb_is_small_on_the_wire(site: TargetSite) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        status, headers, wire = await _get(client, site.url("/gzip-bomb"))
        _, _, small = await _get(client, site.url("/gzip-bomb?mib=5"))
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(wire) < 1_000_000
    assert len(zlib.decompress(small, 31)) == 5 << 20


# --- redirects ---


async def test_redirect_loop_cycles(site: TargetSite, session: aiohttp.ClientSession) -> None:
    locations = [(await _get(session, site.url(f"/redirect-loop/{n}")))[1]["Location"] for n in range(3)]
    assert locations == ["/redirect-loop/1", "/redirect-loop/2", "/redirect-loop/0"]
    with pytest.raises(aiohttp.TooManyRedirects):
        await session.get(site.url("/redirect-loop/0"), max_redirects=5)


async def test_redirect_n_hops_end_at_ok(site: TargetSite, session: aiohttp.ClientSession) -> None:
    async with session.get(site.url("/redirect/3")) as response:
        assert response.status == 200
        assert response.url.path == "/ok"
        assert [r.status for r in response.history] == [302, 302, 302]


@pytest.mark.parametrize(
    "target",
    ["file:///etc/passwd", "http://169.254.169.254/latest/", "http://[::ffff:127.0.0.1]:1/", "http://2130706433:1/"],
)
async def test_redirect_to_is_verbatim(site: TargetSite, session: aiohttp.ClientSession, target: str) -> None:
    status, headers, _ = await _get(session, site.url("/redirect-to"), params={"url": target, "status": "307"})
    assert status == 307
    assert headers["Location"] == target
    assert (await _get(session, site.url("/redirect-to"), params={"url": target, "status": "200"}))[0] == 400


# --- encodings and broken connections ---


async def test_encodings(site: TargetSite, session: aiohttp.ClientSession) -> None:
    _, headers, body = await _get(session, site.url("/encoding/bad-utf8"))
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    _, headers, _ = await _get(session, site.url("/encoding/bogus-charset"))
    assert headers["Content-Type"] == "text/html; charset=no-such-charset"
    _, headers, body = await _get(session, site.url("/encoding/none"))
    assert headers["Content-Type"] == "text/html"
    assert "é".encode("latin-1") in body and not body.isascii()
    assert (await _get(session, site.url("/encoding/klingon")))[0] == 404


async def test_reset_drops_the_connection(site: TargetSite, session: aiohttp.ClientSession) -> None:
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await _get(session, site.url("/reset"))


async def test_truncated_body(site: TargetSite, session: aiohttp.ClientSession) -> None:
    async with session.get(site.url("/truncated")) as response:
        assert response.headers["Content-Length"] == "1000"
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


# --- robots.txt ---


async def test_robots_txt_configurations(session: aiohttp.ClientSession) -> None:
    async with TargetSite() as default, TargetSite(robots_txt="User-agent: *\nDisallow: /x\n") as served:
        async with TargetSite(robots_txt="User-agent: *\n", robots_status=503) as failing:
            assert (await _get(session, default.url("/robots.txt")))[0] == 404
            status, headers, body = await _get(session, served.url("/robots.txt"))
            assert (status, body) == (200, b"User-agent: *\nDisallow: /x\n")
            assert headers["Content-Type"].startswith("text/plain")
            assert (await _get(session, failing.url("/robots.txt")))[0] == 503


# --- instrumentation ---


async def test_stats_routes_are_not_counted(site: TargetSite, session: aiohttp.ClientSession) -> None:
    await _get(session, site.url("/ok?x=1"))
    await _get(session, site.url("/ok"))
    async with session.get(site.url("/__stats")) as response:
        stats = await response.json()
    assert stats["hits"] == {"/ok": 2} and stats["total"] == 2
    assert (await _get(session, site.url("/__reset")))[0] == 200
    assert site.stats.total == 0 and not site.stats.hits and site.stats.min_gap_s() is None


async def test_max_in_flight_counts_concurrent_requests(site: TargetSite, session: aiohttp.ClientSession) -> None:
    await asyncio.gather(*(_get(session, site.url(f"/delay?ms=300&i={i}")) for i in range(5)))
    assert site.stats.max_in_flight == 5
    assert site.stats.per_host_max_in_flight == {"127.0.0.1": 5}
    assert site.stats.in_flight == 0
    assert site.stats.hits["/delay"] == 5


async def test_min_gap_between_request_starts(site: TargetSite, session: aiohttp.ClientSession) -> None:
    for _ in range(3):
        await _get(session, site.url("/ok"))
        await asyncio.sleep(0.1)
    gap_s = site.stats.min_gap_s()
    assert gap_s is not None and 0.1 <= gap_s < 0.5


def test_min_gap_and_reset_on_plain_stats() -> None:
    stats = SiteStats()
    assert stats.min_gap_s() is None
    stats.starts = [3.0, 1.0, 1.25, 2.0]
    assert stats.min_gap_s() == 0.25
    stats.request_started("/ok", "h")
    stats.reset()
    assert stats.in_flight == 1 and stats.max_in_flight == 1 and stats.total == 0
    assert make_app(stats)[STATS_KEY] is stats


async def test_two_sites_on_other_loopback_addresses(session: aiohttp.ClientSession) -> None:
    shared = SiteStats()
    async with TargetSite("127.0.0.2", stats=shared) as first, TargetSite("127.0.0.3", stats=shared) as second:
        assert first.url("/ok").startswith("http://127.0.0.2:")
        assert second.url("/ok").startswith("http://127.0.0.3:")
        await asyncio.gather(_get(session, first.url("/delay?ms=200")), _get(session, second.url("/delay?ms=200")))
        await _get(session, second.url("/ok"))
    assert shared.per_host_max_in_flight == {"127.0.0.2": 1, "127.0.0.3": 1}
    assert shared.max_in_flight == 2 and shared.total == 3


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "8.8.8.8", "::"])
def test_refuses_non_loopback_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        TargetSite(host)


# --- synchronous use ---


def test_threaded_site_serves_sync_clients() -> None:
    with ThreadedTargetSite() as target, requests.Session() as client:
        assert target.url("/ok") == f"http://127.0.0.1:{target.port}/ok"
        assert client.get(target.url("/ok"), timeout=5).status_code == 200
        assert client.get(target.url("/flaky/k?fails=1"), timeout=5).status_code == 500
        stats = client.get(target.url("/__stats"), timeout=5).json()
        assert stats["total"] == 2 and stats["key_hits"] == {"k": 1}
        assert target.stats.hits["/ok"] == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(target.url("/ok"), timeout=2)


def test_main_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "crawlq_local.target", "--host", "127.0.0.1", "--port", "0"],
        cwd=_REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(_REPO)},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.split(" serving on ")[1].split()[0]
        assert requests.get(f"{url}ok", timeout=5).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
