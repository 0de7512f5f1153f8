"""Page content in every success: type, encoding, title, snippet, SHA-256 and validators, from the parser
(selectolax) to the Redis record and `crawlq results`; a 2 MB page is parsed off the event loop."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import brotli
import orjson
import pytest
from aiohttp import web
from selectolax.lexbor import LexborHTMLParser

from crawlq.codec import pack, unpack
from crawlq.models import CONTENT_FIELDS, Content, ErrorClass, UrlResult
from crawlq_local.server import EmbeddedServer
from tests import factories
from tests.conftest import make_settings
from tests.helpers import cli_env, run_cli, workers
from workers import content as content_module
from workers.content import OFF_LOOP_BYTES, Extractor, describe, describe_page, page_links
from workers.fetcher import Fetcher

pytestmark = pytest.mark.timeout(60)

HTML = {"Content-Type": "text/html; charset=utf-8"}


def page(title: str, text: str, head_extra: str = "") -> bytes:
    return (
        f"<!doctype html><html><head>{head_extra}<title>{title}</title><style>p {{ color: red }}</style></head>"
        f"<body><script>var hidden = 1;</script><h1>{title}</h1>\n<p>{text}</p><noscript>enable js</noscript>"
        "</body></html>"
    ).encode()


BIG = page("Big page", "start of the big page " + "filler words " * 160_000)  # about 2 MB
ETAG_PAGE = page("Validators", "A page with validators and a language.")


def test_html_title_snippet_and_hash() -> None:
    body = page("  The\n  Title ", "First   words of the <b>visible</b> text, and more text after them.")
    content = describe(body, HTML, "utf-8", 30)
    assert content.content_type == "text/html" and content.encoding == "utf-8"
    assert content.title == "The Title"
    assert content.snippet == "The Title First words of the v"  # the <h1>, then the text; no script or style
    assert content.content_sha256 == hashlib.sha256(body).hexdigest()


def test_snippet_skips_every_hidden_element_and_long_white_space() -> None:
    body = (
        b"<html><head><title>T</title></head><body><div><script>var a = 1;</script>one"
        b"<template><p>tpl</p></template> <span>two</span><style>b {}</style><noscript>js</noscript>"
        b"<svg><title>icon</title></svg>three</div>" + b" " * 5000 + b"four</body></html>"
    )
    content = describe(body, HTML, "utf-8", 100)
    assert content.title == "T" and content.snippet == "one two three four"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_keep_heap_pad_stops_parser_page_faults() -> None:
    """Without the pad, every parse gives the parser's pools back to the kernel and faults them in again."""
    script = """
import resource
from selectolax.lexbor import LexborHTMLParser
from workers.content import keep_heap_pad
body = b"<!doctype html><title>t</title><p>" + b"words " * 300
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(1000):
        LexborHTMLParser(body)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
unpadded = faults()
assert keep_heap_pad()
print(unpadded, faults())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    unpadded, padded = map(int, done.stdout.split())
    assert unpadded >= 1000 and padded < unpadded / 10, (unpadded, padded)


def test_encoding_from_meta_then_bom_then_utf8() -> None:
    cyrillic = page("Привет", "мир", '<meta charset="windows-1251">').decode().encode("cp1251")
    content = describe(cyrillic, {"Content-Type": "text/html"}, None, 100)
    assert content.encoding == "cp1251" and content.title == "Привет" and content.snippet == "Привет мир"
    utf16 = "\ufeff".encode("utf-16-le") + page("Ωmega", "text").decode().encode("utf-16-le")
    content = describe(utf16, {"Content-Type": "text/html"}, None, 100)
    assert content.encoding == "utf-16-le" and content.title == "Ωmega"
    latin = describe(
        "<p>café</p>".encode("latin-1"), {"Content-Type": "text/html; charset=ISO-8859-1"}, "ISO-8859-1", 10
    )
    assert latin.encoding == "cp1252" and latin.snippet == "café"
    bogus = describe(page("ok", "fine"), {"Content-Type": "text/html; charset=hex"}, "hex", 100)
    assert bogus.encoding == "utf-8" and bogus.title == "ok"


def test_text_binary_and_missing_types() -> None:
    plain = describe(b"  plain\n\n text   here ", {"Content-Type": "text/plain"}, None, 10)
    assert (plain.title, plain.snippet, plain.encoding) == (None, "plain text", "utf-8")
    image = describe(b"\x89PNG\r\n\x1a\n....", {"Content-Type": "image/png"}, None, 100)
    assert (image.encoding, image.title, image.snippet) == (None, None, None)
    assert image.content_sha256 == hashlib.sha256(b"\x89PNG\r\n\x1a\n....").hexdigest()
    sniffed = describe(page("sniffed", "no type"), {}, None, 100)
    assert sniffed.content_type is None and sniffed.title == "sniffed"
    no_snippet = describe(page("t", "x"), HTML, None, 0)
    assert no_snippet.snippet is None and no_snippet.title == "t"


def test_headers_are_recorded() -> None:
    headers = {**HTML, "ETag": '"v1"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT", "Content-Length": "12",
               "Content-Language": "en-GB", "Content-Encoding": "br"}  # fmt: skip
    content = describe(b"<p>hi</p>", headers, None, 100)
    assert (content.etag, content.last_modified) == ('"v1"', "Tue, 01 Dec 2026 10:00:00 GMT")
    assert (content.content_length, content.content_language, content.content_encoding) == (12, "en-GB", "br")
    assert describe(b"", {"Content-Length": "-1"}, None, 100).content_length is None


def test_the_record_round_trips() -> None:
    content = describe(ETAG_PAGE, {**HTML, "ETag": '"e"', "Content-Length": "9"}, None, 100)
    result = factories.result(latency_ms=1.5, size_bytes=9, fetched_at=1, content=content)
    record = result.to_record()
    assert len(record["h"]) == 32  # the hash as raw bytes
    back = UrlResult.from_record("http://a.test/", unpack(pack(record)))  # msgpack, as in Redis
    assert back == result
    assert list(back.to_dict())[-len(CONTENT_FIELDS) :] == CONTENT_FIELDS
    failed = factories.result(
        status=404, latency_ms=1.0, size_bytes=0, error=ErrorClass.HTTP_STATUS, message="HTTP 404", fetched_at=1
    )
    assert UrlResult.from_record("http://a.test/", failed.to_record()).content is None
    assert failed.to_dict()["title"] is None


# --- through a real fetch ------------------------------------------------------------------------


def content_app() -> web.Application:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=BIG, headers=HTML)

    async def validators(_: web.Request) -> web.Response:
        headers = {**HTML, "ETag": '"abc123"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT",
                   "Content-Language": "en"}  # fmt: skip
        return web.Response(body=ETAG_PAGE, headers=headers)

    async def squeezed(_: web.Request) -> web.Response:
        return web.Response(body=brotli.compress(ETAG_PAGE), headers={**HTML, "Content-Encoding": "br"})

    app = web.Application()
    app.add_routes([web.get("/big", big), web.get("/validators", validators), web.get("/br", squeezed)])
    return app


@pytest.fixture
def content_site() -> Iterator[str]:
    """`content_app` served on loopback from its own thread (so worker processes can reach it)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(content_app(), access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def test_a_2_mb_page_is_parsed_off_the_event_loop(content_site: str) -> None:
    assert len(BIG) > 2_000_000 > OFF_LOOP_BYTES
    fetcher = Fetcher(make_settings(allow_private=True))
    await fetcher.start()
    try:
        small = await fetcher.fetch(f"{content_site}/validators")
        assert fetcher._extractor is not None and fetcher._extractor._pool is None  # small: parsed on the loop
        attempt = await fetcher.fetch(f"{content_site}/big")
        assert fetcher._extractor._pool is not None  # large: parsed in the pool
    finally:
        await fetcher.close()
    assert small.ok and attempt.ok and attempt.content is not None
    assert attempt.content.title == "Big page"
    assert attempt.content.snippet == ("Big page start of the big page " + "filler words " * 6)[:100]
    assert attempt.content.content_sha256 == hashlib.sha256(BIG).hexdigest()


async def test_a_deferred_fetch_is_described_by_finish_as_an_immediate_one(content_site: str) -> None:
    """`fetch(defer=True)` returns the success undescribed (the engine gives its slot and lease back
    first); `finish` then describes it exactly as a fetch without `defer` does; a failure has nothing left."""
    fetcher = Fetcher(make_settings(allow_private=True))
    await fetcher.start()
    try:
        deferred = await fetcher.fetch(f"{content_site}/validators", defer=True)
        assert deferred.ok and deferred.content is None and deferred.undescribed is not None
        finished = await fetcher.finish(deferred)
        immediate = await fetcher.fetch(f"{content_site}/validators")
        missing = await fetcher.fetch(f"{content_site}/nowhere", defer=True)
    finally:
        await fetcher.close()
    assert finished.undescribed is None and finished.content is not None
    assert finished.content == immediate.content and finished.content.title == "Validators"
    assert not missing.ok and missing.undescribed is None


async def test_content_extraction_can_be_turned_off(content_site: str) -> None:
    fetcher = Fetcher(make_settings(allow_private=True, extract_content=False))
    await fetcher.start()
    try:
        attempt = await fetcher.fetch(f"{content_site}/validators")
    finally:
        await fetcher.close()
    assert attempt.ok and attempt.content is None


def test_content_round_trips_through_redis_and_crawlq_results(
    content_site: str, redis_server: EmbeddedServer, tmp_path: Path
) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    env = cli_env(redis_server.url, robots_enabled=0, snippet_chars=20)
    urls = [f"{content_site}/validators", f"{content_site}/br", f"{content_site}/big"]
    with workers(env, 1, tmp_path):
        assert run_cli(["submit", "-", "--batch", "content"], env, stdin="\n".join(urls)).returncode == 0
        waited = run_cli(["wait", "content", "--timeout", "40"], env, timeout=50)
        assert waited.returncode == 0, waited.stderr
    lines = run_cli(["results", "content"], env).stdout.splitlines()
    records = {r["url"]: r for r in map(orjson.loads, lines)}
    validators, squeezed, big = (records[url] for url in urls)
    assert validators == validators | {
        "ok": True, "content_type": "text/html", "encoding": "utf-8", "title": "Validators",
        "snippet": "Validators A page wi", "content_sha256": hashlib.sha256(ETAG_PAGE).hexdigest(),
        "etag": '"abc123"', "last_modified": "Tue, 01 Dec 2026 10:00:00 GMT", "content_language": "en",
        "content_length": len(ETAG_PAGE), "content_encoding": None,
    }  # fmt: skip
    assert squeezed["content_encoding"] == "br" and squeezed["title"] == "Validators"
    assert squeezed["content_sha256"] == validators["content_sha256"]  # the hash of the decoded body
    assert squeezed["content_length"] == len(brotli.compress(ETAG_PAGE))
    assert big["title"] == "Big page" and big["bytes"] == len(BIG)
    table = list(csv.DictReader(io.StringIO(run_cli(["results", "content", "--format", "csv"], env).stdout)))
    row = next(r for r in table if r["url"] == urls[0])
    assert row["title"] == "Validators" and row["etag"] == '"abc123"' and row["content_sha256"]
    assert Content.from_record({}) is None


def _prefix_cases() -> list[bytes]:
    """Long pages whose first visible text sits at various depths: after a long inline script or style,
    in character references and multi-byte text, in tables, with white space runs, and none at all."""
    filler = "word &amp; wörd — 𝒳 &#x263A; " * 4000
    return [
        BIG,
        page("Script first", "after the script", head_extra="<script>" + "var x = '<p>no</p>';" * 3000 + "</script>"),
        page("Entities", filler),
        page("Table", "<table><tr><td>cell</td>" + "<td>a &lt; b</td>" * 5000 + "</tr></table>"),
        page("Spaces", " " * 70_000 + "late words " * 100),
        page("Nothing visible", "<script>" + "x" * 80_000 + "</script>"),
        ("<html><head><title>" + "Long title " * 20 + "</title></head><body>" + "é" * 90_000).encode(),
    ]


@pytest.mark.parametrize("prefix", [37, 200, 1000, 5003])
@pytest.mark.parametrize("chars", [1, 40, 100, 700])
def test_a_long_page_parsed_from_its_start_describes_as_the_whole_page(
    monkeypatch: pytest.MonkeyPatch, prefix: int, chars: int
) -> None:
    """`PREFIX_BYTES` only saves work: title and snippet are what a parse of the whole page gives, wherever
    the start is cut (inside a tag, a character reference, a UTF-8 sequence or a script)."""
    import workers.content as content

    for body in _prefix_cases():
        monkeypatch.setattr(content, "PREFIX_BYTES", 10**9)
        whole = describe(body, HTML, "utf-8", chars)
        monkeypatch.setattr(content, "PREFIX_BYTES", prefix)
        assert describe(body, HTML, "utf-8", chars) == whole, body[:80]


def test_a_start_cut_at_every_byte_describes_as_the_whole_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cut of a page dense in character references and multi-byte characters, near the snippet's end."""
    import workers.content as content

    body = page("Dense", "a&amp;b &lt;é&#x263A;𝒳 &CounterClockwiseContourIntegral; x " * 2000)
    monkeypatch.setattr(content, "PREFIX_BYTES", 10**9)
    whole = describe(body, HTML, "utf-8", 60)
    for prefix in range(150, 700):
        monkeypatch.setattr(content, "PREFIX_BYTES", prefix)
        assert describe(body, HTML, "utf-8", 60) == whole, prefix


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every body `workers.content` parses from now on, in order."""
    parsed: list[int] = []
    real = content_module._parse

    def counting(body: bytes, encoding: str) -> LexborHTMLParser:
        parsed.append(len(body))
        return real(body, encoding)

    monkeypatch.setattr(content_module, "_parse", counting)
    return parsed


def test_a_long_page_is_parsed_only_to_its_start_when_that_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.content as content

    parsed = count_parses(monkeypatch)
    described = describe(BIG, HTML, "utf-8", 100)
    assert parsed == [content.PREFIX_BYTES] and described.snippet is not None
    assert described.snippet.startswith("Big page start of the big page filler words")
    assert described.content_sha256 == hashlib.sha256(BIG).hexdigest()  # the hash is still of the whole body
    parsed.clear()
    describe(_prefix_cases()[5], HTML, "utf-8", 100)  # no visible text in the start: the whole page
    assert parsed == [content.PREFIX_BYTES, len(_prefix_cases()[5])]


async def test_bodies_that_arrive_in_one_turn_of_the_loop_are_described_in_one_batch() -> None:
    """Twenty pages handed over together are described in one batch, each as `describe` alone describes
    it; a fetch cancelled while it waits is skipped, and the others still get their descriptions."""
    extractor = Extractor(40)
    bodies = [page(f"Page {number}", f"text of page {number} " * 5) for number in range(20)]
    tasks = [asyncio.create_task(extractor.describe(body, HTML, "utf-8")) for body in bodies]
    await asyncio.sleep(0)  # every task waits for its description now
    tasks[3].cancel()
    described = await asyncio.gather(*tasks, return_exceptions=True)
    assert extractor.batches == 1
    assert isinstance(described[3], asyncio.CancelledError)
    for number, body in enumerate(bodies):
        if number != 3:
            assert described[number] == describe(body, HTML, "utf-8", 40)


async def test_a_batch_lets_the_loop_run_after_batch_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies beyond `BATCH_BYTES` wait for the next turn of the loop, so a burst of pages never holds
    the loop for longer than one batch; a close hands back the descriptions not made."""
    body = page("Batch", "words " * 300)
    monkeypatch.setattr(content_module, "BATCH_BYTES", 3 * len(body))
    extractor = Extractor(20)
    turns: list[int] = []

    async def count_turns() -> None:
        while True:
            turns.append(extractor.batches)
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    described = await asyncio.gather(*(extractor.describe(body, HTML, "utf-8") for _ in range(9)))
    counter.cancel()
    assert extractor.batches == 3  # three bodies a batch
    assert turns[: turns.index(3)].count(1) >= 1 and 2 in turns  # the loop ran between the batches
    assert all(one == described[0] for one in described)
    waiting = asyncio.ensure_future(extractor.describe(body, HTML, "utf-8"))
    await asyncio.sleep(0)
    extractor.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_batch_waits_for_more_pages_unless_one_is_urgent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body waits for the batch's window; an urgent one (the engine: nothing else in flight, so no more
    pages are coming) starts the batch at once, with the bodies that waited."""
    monkeypatch.setattr(content_module, "BATCH_WAIT_S", 60.0)
    extractor = Extractor(20)
    first = asyncio.create_task(extractor.page(page("One", "first page"), HTML, "utf-8", None))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and extractor.batches == 0  # waits for more pages
    last, _ = await extractor.page(page("Two", "last page"), HTML, "utf-8", None, urgent=True)
    described, _ = await first
    assert extractor.batches == 1
    assert (described.title, last.title) == ("One", "Two")


def test_links_are_read_once_per_href_in_document_order_within_the_node_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`page_links`: `<base>`, `rel=nofollow` skipped, `<link>` only with rel=next, fragments dropped, each
    URL once in document order; only the first `MAX_LINK_NODES` elements are read."""
    body = (
        b"<html><head><base href='http://h.test/dir/'><link rel='stylesheet' href='s.css'>"
        b"<link rel='next' href='p2'></head><body>"
        + b"<a href='a#top'>a</a><a href='a'>again</a><a rel='nofollow' href='secret'>n</a>" * 500
        + b"<a href='mailto:x@h.test'>m</a><a href='/b'>b</a><a href='c'>c</a></body></html>"
    )
    tree = LexborHTMLParser(body)
    assert page_links(tree, "http://h.test/") == [
        "http://h.test/dir/p2",
        "http://h.test/dir/a",
        "http://h.test/b",
        "http://h.test/dir/c",
    ]
    monkeypatch.setattr(content_module, "MAX_LINK_NODES", 1_000)  # the 1,002nd element is /b
    assert page_links(LexborHTMLParser(body), "http://h.test/") == ["http://h.test/dir/p2", "http://h.test/dir/a"]


def test_a_long_page_with_links_wanted_reads_its_text_from_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """With links wanted, a long page is parsed whole for its links, while title and snippet come from its
    start, as they would from the whole page."""
    body = page("Linked", "start words " + "<a href='/l/%d'>link</a> filler " * 3000 % tuple(range(3000)))
    monkeypatch.setattr(content_module, "PREFIX_BYTES", 10**9)
    whole = describe_page(body, HTML, "utf-8", 100, "http://h.test/")
    monkeypatch.setattr(content_module, "PREFIX_BYTES", 32 * 1024)
    parsed = count_parses(monkeypatch)
    assert describe_page(body, HTML, "utf-8", 100, "http://h.test/") == whole
    assert parsed == [32 * 1024, len(body)]
    assert len(whole[1]) == min(3000, content_module.MAX_LINKS) and whole[0].title == "Linked"
