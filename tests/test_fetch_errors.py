"""Fetch failures named for what happened (decode, protocol, truncated, one request per attempt), against
real loopback servers: a raw socket server for bytes no HTTP server library would send."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import brotli
import pytest
from arq.connections import ArqRedis
from backports import zstd

from crawlq.jobs import Deferral
from crawlq.models import ErrorClass, UrlResult
from crawlq.settings import Settings
from tests import conftest, factories
from workers.engine import Engine
from workers.fetcher import Attempt, Fetcher, one_request_per_attempt
from workers.gate import HostGate
from workers.robots import RobotsCache

pytestmark = pytest.mark.timeout(20)

PAGE = b"<!doctype html><html><head><title>Compressed  page</title></head><body><p>Hello from the squeezed web</p>"


def reply(status: str, headers: list[bytes], body: bytes, length: int | None = None) -> bytes:
    """An HTTP/1.1 response with `Content-Length: length` (default: the body's true length)."""
    lines = [
        f"HTTP/1.1 {status}".encode(),
        *headers,
        f"Content-Length: {len(body) if length is None else length}".encode(),
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


HTML = b"Content-Type: text/html; charset=utf-8"
REPLIES = {
    "br": reply("200 OK", [HTML, b"Content-Encoding: br"], brotli.compress(PAGE)),
    "zstd": reply("200 OK", [HTML, b"Content-Encoding: zstd"], zstd.compress(PAGE)),
    "gzip": reply("200 OK", [HTML, b"Content-Encoding: gzip"], gzip.compress(PAGE)),
    "bad-gzip": reply("200 OK", [HTML, b"Content-Encoding: gzip"], b"\x1f\x8b\x08\x00" + b"not gzip at all" * 20),
    "bad-br": reply("200 OK", [HTML, b"Content-Encoding: br"], b"\xff\xff\xff not brotli" * 20),
    "bad-zstd": reply("200 OK", [HTML, b"Content-Encoding: zstd"], b"\x28\xb5\x2f\xfd not zstd" * 20),
    "unknown-encoding": reply("200 OK", [HTML, b"Content-Encoding: compress"], b"\x1f\x9d\x90abc"),
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
    "bad-status": b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
    "short": reply("200 OK", [HTML], b"<html><body>only part", length=5000),
    "short-503": reply("503 Service Unavailable", [HTML], b"busy", length=400),
    "chunked-cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n40\r\nthe rest never",
    "silent": b"",
}


@asynccontextmanager
async def raw_site() -> AsyncIterator[tuple[str, Counter[str], list[bytes]]]:
    """A loopback server that answers `/NAME` with `REPLIES[NAME]` and closes; it counts requests per name."""
    counts: Counter[str] = Counter()
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            name = head.split(b" ", 2)[1].decode().strip("/")
            counts[name] += 1
            writer.write(REPLIES[name])
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", counts, heads
    finally:
        server.close()
        await server.wait_closed()


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"allow_private": True, "fetch_timeout_s": 5.0, "robots_enabled": False}
    return conftest.make_settings(**{**values, **overrides})


async def fetch_all(base: str, names: list[str], **overrides: object) -> dict[str, Attempt]:
    fetcher = Fetcher(make_settings(**overrides))
    await fetcher.start()
    try:
        return {name: await fetcher.fetch(f"{base}/{name}") for name in names}
    finally:
        await fetcher.close()


async def test_brotli_and_zstd_pages_decode_and_their_text_is_read() -> None:
    async with raw_site() as (base, _, heads):
        got = await fetch_all(base, ["br", "zstd", "gzip"])
    for name, attempt in got.items():
        assert attempt.ok, (name, attempt)
        assert attempt.size == len(PAGE)
        assert attempt.content is not None
        assert attempt.content.title == "Compressed page"
        assert attempt.content.snippet == "Hello from the squeezed web"
        assert attempt.content.content_encoding == name
    advertised = heads[0].lower().split(b"accept-encoding: ")[1].split(b"\r\n")[0]
    assert set(advertised.split(b", ")) == {b"gzip", b"deflate", b"br", b"zstd"}


@pytest.mark.parametrize("name", ["bad-gzip", "bad-br", "bad-zstd"])
async def test_a_corrupt_compressed_body_is_a_decode_failure(name: str) -> None:
    async with raw_site() as (base, counts, _):
        attempt = (await fetch_all(base, [name]))[name]
    assert attempt.error is ErrorClass.DECODE, attempt
    assert attempt.status == 200
    encoding = name.removeprefix("bad-")
    assert attempt.message == f"HTTP 200, but the body is not valid {encoding} (Content-Encoding)"
    assert counts[name] == 1


async def test_an_unknown_content_encoding_is_a_decode_failure() -> None:
    async with raw_site() as (base, _, _):
        attempt = (await fetch_all(base, ["unknown-encoding"]))["unknown-encoding"]
    assert attempt.error is ErrorClass.DECODE and attempt.status == 200
    assert attempt.message is not None and "unsupported Content-Encoding 'compress'" in attempt.message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not-http", "the reply is not HTTP: it begins b'SSH-2.0-OpenSSH_9.6'"),
        ("bad-status", "invalid HTTP status line b'HTTP/1.1 abc OK'"),
        ("bad-header", "invalid HTTP response header: Invalid header token b'Bad Header: x'"),
    ],
)
async def test_a_reply_that_is_not_http_is_a_protocol_failure(name: str, message: str) -> None:
    async with raw_site() as (base, counts, _):
        attempt = (await fetch_all(base, [name]))[name]
    assert attempt.error is ErrorClass.PROTOCOL, attempt
    assert attempt.status is None
    assert attempt.message == message
    assert counts[name] == 1


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("short", 200, "HTTP 200, but the body was cut short: 21 of 5000 bytes (Content-Length)"),
        ("short-503", 503, "HTTP 503, but the body was cut short: 4 of 400 bytes (Content-Length)"),
        ("chunked-cut", 200, "HTTP 200, but the chunked body was cut short after 19 bytes (no last chunk)"),
    ],
)
async def test_a_body_cut_short_is_truncated_with_its_status(name: str, status: int, message: str) -> None:
    async with raw_site() as (base, _, _):
        attempt = (await fetch_all(base, [name]))[name]
    assert attempt.error is ErrorClass.TRUNCATED, attempt
    assert attempt.status == status
    assert attempt.message == message


async def test_a_server_that_closes_without_a_reply_gets_one_request_per_attempt() -> None:
    async with raw_site() as (base, counts, _):
        got = await fetch_all(base, ["silent", "silent", "silent"])
        attempt = got["silent"]
    assert attempt.error is ErrorClass.CONNECT, attempt
    assert attempt.message == "the server closed the connection before its response was complete"
    assert counts["silent"] == 3  # three attempts (one `fetch` each), three requests: aiohttp's own retry is off


async def test_aiohttp_still_has_the_switch_we_turn_off() -> None:
    """Pins aiohttp's private `_retry_connection`: without it our fetches could again send two requests."""
    async with aiohttp.ClientSession() as session:
        assert session._retry_connection is True
        one_request_per_attempt(session)
        assert session._retry_connection is False


async def outcome_of(redis: ArqRedis, settings: Settings, url: str) -> UrlResult | Deferral:
    fetcher = Fetcher(settings)
    await fetcher.start()
    gate = HostGate(redis, settings, "w")
    gate.start()
    try:
        engine = Engine(settings, fetcher, gate, RobotsCache(redis, settings, fetcher, gate))
        entry = factories.entry(url)
        return await engine.process(entry, time.monotonic() + 10)
    finally:
        await gate.close()
        await fetcher.close()


async def test_decode_and_protocol_failures_are_final_at_once_and_truncated_is_retried(
    redis: ArqRedis, settings: Settings
) -> None:
    settings = settings.model_copy(update={"robots_enabled": False})
    async with raw_site() as (base, counts, _):
        corrupt = await outcome_of(redis, settings, f"{base}/bad-gzip")
        foreign = await outcome_of(redis, settings, f"{base}/not-http")
        short = await outcome_of(redis, settings, f"{base}/short")
    assert isinstance(corrupt, UrlResult) and corrupt.error == "decode" and corrupt.attempts == 1
    assert corrupt.status == 200
    assert isinstance(foreign, UrlResult) and foreign.error == "protocol" and foreign.attempts == 1
    assert isinstance(short, Deferral) and short.entries[0].attempts == 1  # a retry, after backoff
    assert counts == {"bad-gzip": 1, "not-http": 1, "short": 1}
