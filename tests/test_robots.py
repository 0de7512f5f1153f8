"""workers.robots through the engine, with a real Redis and target site: disallowed pages are never fetched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from arq.connections import ArqRedis

from crawlq import keys
from crawlq.jobs import Entry
from crawlq.models import ErrorClass, UrlResult
from crawlq.settings import Settings
from crawlq.urls import canonical, host_of, origin_of, url_id
from crawlq_local.target import TargetSite
from workers.engine import Engine
from workers.fetcher import Fetcher
from workers.gate import HostGate, host_limits
from workers.robots import ROBOTS_ERROR_TTL_S, RobotsCache, verdict_of

pytestmark = pytest.mark.timeout(20)

RULES = "User-agent: *\nDisallow: /page/\n\nUser-agent: examplebot\nDisallow: /fast\n"


@pytest.fixture
def robots_on(settings: Settings) -> Settings:
    return settings.model_copy(update={"robots_enabled": True, "fetch_timeout_s": 3.0})


@asynccontextmanager
async def engine_for(redis: ArqRedis, settings: Settings, name: str = "w") -> AsyncIterator[Engine]:
    fetcher = Fetcher(settings)
    await fetcher.start()
    gate = HostGate(redis, settings, name)
    gate.start()
    try:
        yield Engine(settings, fetcher, gate, RobotsCache(redis, settings, fetcher, gate))
    finally:
        await gate.close()
        await fetcher.close()


async def crawl(engine: Engine, url: str, *, as_given: bool = False) -> UrlResult:
    """Run `url` through the engine; `as_given`: without canonicalising it first (a URL the producer of today
    refuses may still sit in an older job)."""
    spelled = url if as_given else canonical(url)
    entry = Entry(url_id(spelled), spelled)
    outcome = await asyncio.wait_for(engine.process(entry, time.monotonic() + 15), timeout=15)
    assert isinstance(outcome, UrlResult), outcome
    return outcome


async def test_disallowed_url_is_not_fetched(redis: ArqRedis, robots_on: Settings) -> None:
    async with TargetSite(robots_txt=RULES) as site, engine_for(redis, robots_on) as engine:
        blocked = await crawl(engine, site.url("/page/1"))
        allowed = await crawl(engine, site.url("/ok"))
        allowed_for_us = await crawl(engine, site.url("/fast"))  # disallowed only for examplebot
    assert blocked.error == ErrorClass.ROBOTS_DISALLOWED and not blocked.ok
    assert site.stats.hits["/page/1"] == 0
    assert allowed.ok and allowed_for_us.ok
    assert site.stats.hits["/robots.txt"] == 1


async def test_agent_name_is_the_first_word_of_the_user_agent(redis: ArqRedis, robots_on: Settings) -> None:
    bot = robots_on.model_copy(update={"user_agent": "examplebot/1.0 (+https://example.test/bot)"})
    async with TargetSite(robots_txt=RULES) as site, engine_for(redis, bot) as engine:
        fast = await crawl(engine, site.url("/fast"))
        page = await crawl(engine, site.url("/page/1"))  # examplebot's own group replaces the * group
    assert fast.error == ErrorClass.ROBOTS_DISALLOWED
    assert page.ok
    assert site.stats.hits["/fast"] == 0


async def test_robots_is_fetched_once_across_urls_and_caches(redis: ArqRedis, robots_on: Settings) -> None:
    async with TargetSite(robots_txt=RULES) as site:
        async with engine_for(redis, robots_on, "w1") as first, engine_for(redis, robots_on, "w2") as second:
            urls = [site.url(f"/ok?i={i}") for i in range(20)] + [site.url(f"/page/{i}") for i in range(10)]
            results = await asyncio.gather(*(crawl((first, second)[i % 2], u) for i, u in enumerate(urls)))
        async with engine_for(redis, robots_on, "w3") as late:
            assert (await crawl(late, site.url("/page/99"))).error == ErrorClass.ROBOTS_DISALLOWED
    assert sum(r.ok for r in results) == 20
    assert sum(r.error == ErrorClass.ROBOTS_DISALLOWED for r in results) == 10
    assert site.stats.hits["/robots.txt"] == 1
    ttl = await redis.ttl(keys.robots(origin_of(site.url("/"))))
    assert 0 < ttl <= robots_on.robots_ttl_s


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_on_robots_means_deny_for_a_while(redis: ArqRedis, robots_on: Settings, status: int) -> None:
    async with TargetSite(robots_status=status) as site, engine_for(redis, robots_on) as engine:
        result = await crawl(engine, site.url("/ok"))
        again = await crawl(engine, site.url("/fast"))
    assert result.error == again.error == ErrorClass.ROBOTS_DISALLOWED
    assert site.stats.hits["/ok"] == site.stats.hits["/fast"] == 0
    assert site.stats.hits["/robots.txt"] == 1
    ttl = await redis.ttl(keys.robots(origin_of(site.url("/"))))
    assert 0 < ttl <= ROBOTS_ERROR_TTL_S < robots_on.robots_ttl_s


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_client_error_on_robots_means_allow_all(redis: ArqRedis, robots_on: Settings, status: int) -> None:
    async with TargetSite(robots_status=status) as site, engine_for(redis, robots_on) as engine:
        result = await crawl(engine, site.url("/page/1"))
    assert result.ok
    assert site.stats.hits["/page/1"] == 1


async def test_robots_can_be_turned_off(redis: ArqRedis, robots_on: Settings) -> None:
    off = robots_on.model_copy(update={"robots_enabled": False})
    async with TargetSite(robots_txt=RULES) as site, engine_for(redis, off) as engine:
        assert (await crawl(engine, site.url("/page/1"))).ok
    assert site.stats.hits["/robots.txt"] == 0


async def test_crawl_delay_is_honoured(redis: ArqRedis, robots_on: Settings) -> None:
    polite = robots_on.model_copy(update={"per_host_concurrency": 10, "per_host_delay_s": 0.0})
    async with TargetSite(robots_txt="User-agent: *\nCrawl-delay: 0.3\n") as site, engine_for(redis, polite) as engine:
        await crawl(engine, site.url("/ok?warm=1"))  # loads robots.txt
        site.stats.reset()
        started = time.monotonic()
        results = await asyncio.gather(*(crawl(engine, site.url(f"/ok?i={i}")) for i in range(4)))
        elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    gap = site.stats.min_gap_s()
    assert gap is not None and gap >= 0.3 - 0.01, gap
    assert elapsed >= 0.3 * 3 - 0.05


async def test_crawl_delay_is_capped(redis: ArqRedis, robots_on: Settings) -> None:
    capped = robots_on.model_copy(
        update={"per_host_concurrency": 10, "per_host_delay_s": 0.0, "robots_max_crawl_delay_s": 0.1}
    )
    async with TargetSite(robots_txt="User-agent: *\nCrawl-delay: 60\n") as site, engine_for(redis, capped) as engine:
        verdict = await engine.robots.verdict(site.url("/ok"))
        assert verdict.crawl_delay(engine.robots.agent) == 60
        assert host_limits(capped, host_of(site.url("/ok")), 60) == (10, 0.1)
        site.stats.reset()  # forget the robots.txt request: only page requests are spaced
        started = time.monotonic()
        results = await asyncio.gather(*(crawl(engine, site.url(f"/ok?i={i}")) for i in range(4)))
        elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    gap = site.stats.min_gap_s()
    assert gap is not None and gap >= 0.1 - 0.01
    assert elapsed < 3.0  # not 60 s per request


async def test_robots_request_is_spaced_like_any_other_request(redis: ArqRedis, robots_on: Settings) -> None:
    """The per-host delay is between request starts to the host; robots.txt is one of those requests."""
    spaced = robots_on.model_copy(update={"per_host_concurrency": 2, "per_host_delay_s": 0.3})
    async with TargetSite(robots_status=404) as site, engine_for(redis, spaced) as engine:
        assert (await crawl(engine, site.url("/ok"))).ok
    assert site.stats.hits["/robots.txt"] == 1
    gap = site.stats.min_gap_s()
    assert gap is not None and gap >= 0.3 - 0.01, f"/robots.txt and /ok started {gap:.4f} s apart"


@asynccontextmanager
async def robots_with_charset(charset: str) -> AsyncIterator[str]:
    """A site whose robots.txt declares a charset that is not a text encoding."""

    async def robots(_: web.Request) -> web.Response:
        body = b"User-agent: *\nDisallow: /private\n"
        return web.Response(body=body, headers={"Content-Type": f"text/plain; charset={charset}"})

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("charset", ["hex", "rot13"])
async def test_robots_with_a_hostile_charset_still_gives_a_verdict(
    redis: ArqRedis, robots_on: Settings, charset: str
) -> None:
    async with robots_with_charset(charset) as base, engine_for(redis, robots_on) as engine:
        private = await crawl(engine, f"{base}/private/x")
        public = await crawl(engine, f"{base}/public")
    assert private.error == ErrorClass.ROBOTS_DISALLOWED
    assert public.ok


async def test_a_robots_failure_that_is_not_the_servers_does_not_disallow(redis: ArqRedis, robots_on: Settings) -> None:
    """`http://127.0.0.1./` (refused at submit today, but possible in an older job): the robots.txt fetch fails
    as invalid_url (our side), so the URL gets its own outcome, not robots_disallowed; an unknown name gets `dns`;
    a blocked address `blocked_address`."""
    once = robots_on.model_copy(update={"max_attempts": 1})
    guarded = once.model_copy(update={"allow_private": False, "allowed_networks": []})
    async with TargetSite() as site, engine_for(redis, once) as engine, engine_for(redis, guarded) as strict:
        dotted = await crawl(engine, f"http://127.0.0.1.:{site.port}/ok", as_given=True)
        unknown = await crawl(engine, "http://nonexistent.invalid/page")
        blocked = await crawl(strict, site.url("/ok"))
    assert dotted.error == ErrorClass.INVALID_URL, dotted
    assert unknown.error == ErrorClass.DNS, unknown
    assert blocked.error == ErrorClass.BLOCKED_ADDRESS, blocked
    for origin in (origin_of(f"http://127.0.0.1.:{site.port}/"), "http://nonexistent.invalid"):
        ttl = await redis.ttl(keys.robots(origin))
        assert 0 < ttl <= ROBOTS_ERROR_TTL_S  # a provisional allow: robots.txt is asked again soon


@pytest.mark.parametrize(
    ("status", "error", "mode"),
    [
        (200, None, "rules"),
        (404, ErrorClass.HTTP_STATUS, "allow"),
        (503, ErrorClass.HTTP_STATUS, "deny"),
        (None, ErrorClass.TIMEOUT, "deny"),
        (None, ErrorClass.CONNECT, "deny"),
        (200, ErrorClass.TRUNCATED, "deny"),
        (None, ErrorClass.PROTOCOL, "deny"),
        (None, ErrorClass.INVALID_URL, "allow"),
        (None, ErrorClass.BLOCKED_ADDRESS, "allow"),
        (None, ErrorClass.DNS, "allow"),
        (None, ErrorClass.TLS, "allow"),
        (200, ErrorClass.DECODE, "allow"),
        (200, ErrorClass.TOO_LARGE, "allow"),
        (None, ErrorClass.REDIRECT_LOOP, "allow"),
        (302, ErrorClass.BAD_REDIRECT, "allow"),
    ],
)
def test_only_the_servers_own_failures_disallow(status: int | None, error: ErrorClass | None, mode: str) -> None:
    verdict = verdict_of(status, error, b"User-agent: *\nDisallow: /x\n", None)
    assert verdict.mode == mode
    assert verdict.provisional is (mode != "rules" and status != 404)
