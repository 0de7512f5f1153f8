"""workers.fetcher against the hostile local target: each hazard is one failure result with the right class.

Real servers on loopback only (crawlq_local.target, plus a raw socket server for bytes aiohttp would not send).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

import workers.fetcher as fetcher_module
from crawlq.addresses import AddressPolicy, GuardedResolver
from crawlq.models import ErrorClass
from crawlq.settings import Settings
from crawlq.urls import canonical
from crawlq_local.target import TargetSite
from tests import conftest
from workers.fetcher import Attempt, Fetcher, decode_text

pytestmark = pytest.mark.timeout(20)

KIB = 1024
MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_crawlq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CRAWLQ_"):
            monkeypatch.delenv(name)


def make_settings(**overrides: object) -> Settings:
    values: dict[str, Any] = dict(
        allowed_networks=["127.0.0.0/8"], fetch_timeout_s=5.0, max_redirects=5, max_body_bytes=2 * MIB
    )
    return conftest.make_settings(**{**values, **overrides})


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Fetcher]:
    fetcher = Fetcher(settings)
    await fetcher.start()
    try:
        yield fetcher
    finally:
        await fetcher.close()


async def fetch(url: str, **overrides: object) -> Attempt:
    async with running(make_settings(**overrides)) as fetcher:
        return await fetcher.fetch(url, keep_body=True)


@pytest.fixture
async def site() -> AsyncIterator[TargetSite]:
    async with TargetSite("127.0.0.1") as target:
        yield target


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# --- the body cap, and the worker's memory -------------------------------------------------------

_RSS_PROBE = """
import asyncio, json, sys
from crawlq.settings import Settings
from workers.fetcher import Fetcher

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

async def main(url, warm_url, cap):
    settings = Settings(_env_file=None, allowed_networks=["127.0.0.0/8"], max_body_bytes=cap, fetch_timeout_s=15)
    fetcher = Fetcher(settings)
    await fetcher.start()
    await fetcher.fetch(warm_url)
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    attempt = await fetcher.fetch(url)
    peak, after = status("VmHWM"), status("VmRSS")
    await fetcher.close()
    print(json.dumps({"error": attempt.error, "size": attempt.size, "before": before, "peak": peak, "after": after}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def fetch_in_a_fresh_worker(url: str, warm_url: str, cap: int) -> dict[str, int | str | None]:
    """Run one fetch in a new process and report its RSS before, its peak during, and the outcome."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLQ_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RSS_PROBE,
        url,
        warm_url,
        str(cap),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["/gzip-bomb?mib=100", "/huge?mib=1024"])
async def test_body_cap_stops_bombs_with_bounded_memory(site: TargetSite, path: str) -> None:
    cap = 2 * MIB
    started = time.monotonic()
    report = await fetch_in_a_fresh_worker(site.url(path), site.url("/ok"), cap)
    assert report["error"] == ErrorClass.TOO_LARGE
    size = int(report["size"] or 0)
    assert cap < size <= cap + 64 * KIB
    growth = int(report["peak"] or 0) - int(report["before"] or 0)
    assert growth < 50_000_000, f"RSS grew by {growth / 1e6:.1f} MB"
    assert time.monotonic() - started < 10
    assert site.stats.hits[path.partition("?")[0]] == 1


async def test_body_cap_is_exact_and_counts_decompressed_bytes(site: TargetSite) -> None:
    at_cap = await fetch(site.url("/huge?mib=2"), max_body_bytes=2 * MIB)
    assert at_cap.ok and at_cap.size == 2 * MIB
    over = await fetch(site.url("/huge?mib=2"), max_body_bytes=2 * MIB - 1)
    assert over.error is ErrorClass.TOO_LARGE
    # ~2 KB on the wire, 3 MiB once decompressed: the cap applies to what the worker would hold
    bomb = await fetch(site.url("/gzip-bomb?mib=3"), max_body_bytes=2 * MIB)
    assert bomb.error is ErrorClass.TOO_LARGE and 2 * MIB < bomb.size <= 2 * MIB + 64 * KIB
    small = await fetch(site.url("/gzip-bomb?mib=1"), max_body_bytes=2 * MIB)
    assert small.ok and small.body == bytes(MIB)


# --- the per-attempt deadline -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/slow-drip?interval=0.25&total=400",  # a byte every 250 ms: read timeouts never fire
        "/hang?s=30",  # never answers
        "/delay/20",  # headers very late
        "/redirect-to?url=/slow-drip%3Finterval%3D0.25",  # the deadline covers every hop together
    ],
)
async def test_deadline_cuts_off_slow_servers_on_time(site: TargetSite, path: str) -> None:
    timeout_s = 1.5
    started = time.monotonic()
    attempt = await fetch(site.url(path), fetch_timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    assert attempt.error is ErrorClass.TIMEOUT
    assert timeout_s - 0.5 <= elapsed <= timeout_s + 0.5
    assert attempt.latency_ms is not None and abs(attempt.latency_ms / 1000 - elapsed) < 0.2
    # the connection was really dropped: the server stops serving it
    assert await wait_for(lambda: site.stats.in_flight == 0, 3.0), "the server still serves the abandoned request"


async def test_after_a_deadline_the_task_is_not_left_cancelled(site: TargetSite) -> None:
    """The deadline cancels the fetching task and takes that cancellation back: the same task goes on
    (the engine's next attempt, the job's commit) as if nothing had been cancelled."""
    async with running(make_settings(fetch_timeout_s=0.3)) as fetcher:
        timed_out = await fetcher.fetch(site.url("/hang?s=30"))
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.1)  # a cancellation left pending would be raised here
        fine = await fetcher.fetch(site.url("/ok"))
    assert timed_out.error is ErrorClass.TIMEOUT and timed_out.message == "no complete response within 0.3 s"
    assert fine.ok and fine.status == 200


async def test_a_cancellation_from_outside_is_not_turned_into_a_timeout(site: TargetSite) -> None:
    """Shutdown cancels in-flight fetches to hand their URLs back: that must stay a cancellation."""
    async with running(make_settings(fetch_timeout_s=5.0)) as fetcher:
        task = asyncio.create_task(fetcher.fetch(site.url("/hang?s=30")))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        many = [asyncio.create_task(fetcher.fetch(site.url(f"/delay?ms={50 + n}"))) for n in range(20)]
        attempts = await asyncio.gather(*many)
    assert all(attempt.ok for attempt in attempts)  # the deadline ticker runs on for the others


# --- redirects ----------------------------------------------------------------------------------


async def test_redirect_loop_is_detected(site: TargetSite) -> None:
    attempt = await fetch(site.url("/redirect-loop/0"))
    assert attempt.error is ErrorClass.REDIRECT_LOOP
    assert sum(n for p, n in site.stats.hits.items() if p.startswith("/redirect-loop/")) == 3


async def test_redirect_limit(site: TargetSite) -> None:
    within = await fetch(site.url("/redirect/5"), max_redirects=5)
    assert within.ok and within.final_url == site.url("/ok")
    too_many = await fetch(site.url("/redirect/6"), max_redirects=5)
    assert too_many.error is ErrorClass.REDIRECT_LOOP
    assert "5 redirects" in (too_many.message or "")
    assert site.stats.hits["/ok"] == 1  # the sixth hop was not followed
    none_allowed = await fetch(site.url("/redirect/1"), max_redirects=0)
    assert none_allowed.error is ErrorClass.REDIRECT_LOOP


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "ftp://127.0.0.1/",
        "data:text/html,hi",
        "http://[::1",
        "http://127.0.0.1:99999/",
        "http://exa mple.com/",  # accepted by aiohttp, refused by crawlq's own URL validator
    ],
)
async def test_redirect_to_an_unusable_location_is_bad_redirect(site: TargetSite, location: str) -> None:
    attempt = await fetch(site.url("/redirect-to?url=" + urllib.parse.quote(location, safe="")))
    assert attempt.error is ErrorClass.BAD_REDIRECT, attempt
    assert attempt.status == 302


# --- the SSRF guard on redirects and direct URLs -----------------------------------------------


class StubResolver(AbstractResolver):
    """DNS answers we choose (host name -> IPv4 address); anything else does not resolve."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"stub resolver: {host} does not resolve")
        address = self.answers[host]
        return [ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)]

    async def close(self) -> None:
        pass


def use_stub_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> StubResolver:
    """The Fetcher builds its own GuardedResolver; swap in one whose inner resolver is our stub."""
    stub = StubResolver(answers)
    monkeypatch.setattr(fetcher_module, "GuardedResolver", lambda policy, _inner=None: GuardedResolver(policy, stub))
    return stub


@pytest.fixture
async def internal() -> AsyncIterator[TargetSite]:
    """The "internal" service an attacker wants to reach: loopback 127.0.0.1, never allowed."""
    async with TargetSite("127.0.0.1") as target:
        yield target


@pytest.fixture
async def origin() -> AsyncIterator[TargetSite]:
    """A "public" site the crawler may fetch: 127.0.0.2, allowed through allowed_networks."""
    async with TargetSite("127.0.0.2") as target:
        yield target


def guarded(**overrides: object) -> Settings:
    values: dict[str, Any] = dict(allow_private=False, allowed_networks=["127.0.0.2/32"])
    values.update(overrides)
    return make_settings(**values)


# {port} is the internal server's port
REDIRECT_TARGETS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://127.0.0.1:{port}/ok",
    "http://[::ffff:127.0.0.1]:{port}/ok",
    "http://2130706433:{port}/ok",  # 127.0.0.1 in decimal
    "http://internal.test:{port}/ok",  # a name that resolves to 127.0.0.1 (checked at connect time)
    "http://localhost:{port}/ok",  # the system resolver's answer is checked too
]


@pytest.mark.parametrize("template", REDIRECT_TARGETS)
async def test_redirect_to_a_private_address_is_blocked(
    origin: TargetSite, internal: TargetSite, monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    target = template.format(port=internal.port)
    if "internal.test" in target:
        use_stub_dns(monkeypatch, {"internal.test": "127.0.0.1"})
    async with running(guarded()) as fetcher:
        sanity = await fetcher.fetch(origin.url("/ok"))
        assert sanity.ok, "the allowlisted origin must be fetchable, or this test proves nothing"
        attempt = await fetcher.fetch(origin.url("/redirect-to?url=" + urllib.parse.quote(target, safe="")))
    assert internal.stats.total == 0, "the internal server was reached"
    assert attempt.error is ErrorClass.BLOCKED_ADDRESS, attempt
    assert origin.stats.hits["/redirect-to"] == 1


async def test_redirect_hops_within_allowed_networks_are_followed(origin: TargetSite, internal: TargetSite) -> None:
    location = urllib.parse.quote(internal.url("/ok"), safe="")
    async with running(guarded(allowed_networks=["127.0.0.2/32", "127.0.0.1/32"])) as fetcher:
        attempt = await fetcher.fetch(origin.url(f"/redirect-to?url={location}"))
    assert attempt.ok and attempt.final_url == internal.url("/ok")
    assert internal.stats.hits["/ok"] == 1


DIRECT_TARGETS = [
    "http://127.0.0.1:{port}/ok",
    "http://[::1]:{port}/ok",
    "http://[::ffff:127.0.0.1]:{port}/ok",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://2130706433:{port}/ok",
    "http://0x7f000001:{port}/ok",  # hex: the system resolver turns it into 127.0.0.1
    "http://localhost:{port}/ok",
]


@pytest.mark.parametrize("template", DIRECT_TARGETS)
async def test_direct_url_to_a_blocked_address(internal: TargetSite, template: str) -> None:
    attempt = await fetch(template.format(port=internal.port), allowed_networks=[])
    assert internal.stats.total == 0
    assert attempt.error is ErrorClass.BLOCKED_ADDRESS, attempt
    assert "CRAWLQ_ALLOWED_NETWORKS" in (attempt.message or ""), attempt.message


async def test_allow_private_lets_loopback_through(internal: TargetSite) -> None:
    assert (await fetch(internal.url("/ok"), allow_private=True, allowed_networks=[])).ok
    assert (await fetch(internal.url("/ok"), allow_private=False, allowed_networks=["127.0.0.0/8"])).ok
    assert internal.stats.hits["/ok"] == 2


# --- bad encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "replaced"),
    [("bad-utf8", True), ("bogus-charset", False), ("none", True)],
)
async def test_bad_encodings_still_succeed(site: TargetSite, kind: str, replaced: bool) -> None:
    attempt = await fetch(site.url(f"/encoding/{kind}"))
    assert attempt.ok and attempt.status == 200
    text = decode_text(attempt.body, attempt.charset)
    assert ("\ufffd" in text) is replaced
    assert "<title>" in text


@pytest.mark.parametrize("charset", ["rot13", "hex", "base64", "zlib", "idna", "undefined", "a\x00b", "utf-16", ""])
def test_decode_text_never_raises(charset: str) -> None:
    """Whatever charset a server declares, decoding falls back instead of raising."""
    text = decode_text(b"User-agent: *\nDisallow: /x \xff\xfe\n", charset)
    assert isinstance(text, str) and text


# --- broken connections, DNS --------------------------------------------------------------------


async def test_a_reset_connection_is_a_connect_error(site: TargetSite) -> None:
    attempt = await fetch(site.url("/reset"))
    assert attempt.error is ErrorClass.CONNECT, attempt
    assert attempt.status is None


async def test_a_body_cut_short_is_truncated_and_keeps_its_status(site: TargetSite) -> None:
    attempt = await fetch(site.url("/truncated"))  # Content-Length 1000, 10 bytes sent, then closed
    assert attempt.error is ErrorClass.TRUNCATED, attempt
    assert attempt.status == 200
    assert attempt.message == "HTTP 200, but the body was cut short: 10 of 1000 bytes (Content-Length)"


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        attempt = await fetch(f"http://127.0.0.1:{port}/")
    assert attempt.error is ErrorClass.CONNECT


async def test_dns_failure_is_fast_and_classified() -> None:
    started = time.monotonic()
    attempt = await fetch("http://nonexistent.invalid/", fetch_timeout_s=3.0)
    assert attempt.error is ErrorClass.DNS, attempt
    assert time.monotonic() - started < 2.0


# --- IDN ----------------------------------------------------------------------------------------


async def test_idn_host_is_fetched_by_punycode(site: TargetSite, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = use_stub_dns(monkeypatch, {"xn--bcher-kva.test": "127.0.0.1"})
    url = canonical(f"http://bücher.test:{site.port}/ok")
    assert url == f"http://xn--bcher-kva.test:{site.port}/ok"
    attempt = await fetch(url, allow_private=False, allowed_networks=["127.0.0.1/32"])
    assert attempt.ok, attempt
    assert stub.asked == ["xn--bcher-kva.test"]
    assert "xn--bcher-kva.test" in site.stats.per_host_max_in_flight  # the Host header the server saw
    assert attempt.final_url == url


async def test_a_name_resolving_to_a_blocked_address_is_refused(
    site: TargetSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_stub_dns(monkeypatch, {"rebind.test": "127.0.0.1"})
    attempt = await fetch(f"http://rebind.test:{site.port}/ok", allowed_networks=[])
    assert attempt.error is ErrorClass.BLOCKED_ADDRESS
    assert site.stats.total == 0


# --- headers: User-Agent and hostile Retry-After ------------------------------------------------


@asynccontextmanager
async def raw_server(respond: Callable[[bytes], Awaitable[bytes]]) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback HTTP/1.1 server written with sockets, to send bytes aiohttp's server would refuse."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            requests.append(head)
            writer.write(await respond(head))
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/", requests
    finally:
        server.close()
        await server.wait_closed()


def response(status: str, *headers: bytes, body: bytes = b"hello") -> bytes:
    lines = [f"HTTP/1.1 {status}".encode(), f"Content-Length: {len(body)}".encode(), b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def test_user_agent_is_identifiable_and_configurable() -> None:
    async def ok(_: bytes) -> bytes:
        return response("200 OK")

    async with raw_server(ok) as (url, requests):
        assert (await fetch(url)).ok
        assert (await fetch(url, user_agent="examplebot/2.0 (+https://example.test/bot)")).ok
    default, custom = (head.decode().lower() for head in requests)
    assert "\r\nuser-agent: crawlq/" in default
    assert "\r\nuser-agent: examplebot/2.0 (+https://example.test/bot)\r\n" in custom


async def test_retry_after_is_read_in_both_forms(site: TargetSite) -> None:
    seconds = await fetch(site.url("/retry-after/a?status=429&after=3&form=seconds"))
    assert seconds.status == 429 and seconds.error is ErrorClass.HTTP_STATUS
    assert seconds.retry_after_s == 3.0
    dated = await fetch(site.url("/retry-after/b?status=503&after=3&form=date"))
    assert dated.status == 503 and dated.retry_after_s is not None
    assert 1.9 <= dated.retry_after_s <= 3.0  # HTTP-dates have one-second resolution


@pytest.mark.parametrize("value", ["²".encode(), b"1" + b"0" * 400, b"\xff\xfe", b"soon"])
async def test_hostile_retry_after_does_not_fail_a_good_page(value: bytes) -> None:
    async def ok_with_header(_: bytes) -> bytes:
        return response("200 OK", b"Retry-After: " + value)

    async with raw_server(ok_with_header) as (url, _):
        attempt = await fetch(url)
    assert attempt.ok, attempt
    assert attempt.retry_after_s is None or 0 <= attempt.retry_after_s < float("inf")


def test_policy_is_built_from_the_settings() -> None:
    fetcher = Fetcher(make_settings(allow_private=False, allowed_networks=["127.0.0.2/32"]))
    assert isinstance(fetcher.policy, AddressPolicy)
    assert fetcher.policy.allow_private is False and [str(n) for n in fetcher.policy.allowed] == ["127.0.0.2/32"]
