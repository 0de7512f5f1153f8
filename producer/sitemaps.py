"""Sitemaps for `crawlq submit --sitemap URL` and `--sitemap-from-robots ORIGIN`: the page URLs they list.

A sitemap (`<urlset>`) lists pages; a sitemap index (`<sitemapindex>`) lists sitemaps, read in turn to
`MAX_NESTING` levels. A body starting with the gzip magic bytes is gunzipped. robots.txt `Sitemap:`
lines name sitemaps too. Everything is fetched here, in the producer, under the workers' SSRF rules
(`crawlq.addresses`: every name resolution and every redirect hop), and the XML is parsed by defusedxml
(no DTD, no entity expansion). Sitemaps from the web are hostile: each body is capped at
`MAX_SITEMAP_BYTES` (after gunzip), the sitemaps read at `MAX_SITEMAPS` and the URLs at `MAX_URLS`.
A sitemap that cannot be read stops the submit with one sentence (`SitemapError`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from crawlq.addresses import AddressPolicy, GuardedResolver, literal_address
from crawlq.errors import CrawlqError
from crawlq.settings import Settings

__all__ = ["MAX_NESTING", "MAX_SITEMAPS", "MAX_SITEMAP_BYTES", "MAX_URLS", "SitemapError", "sitemap_urls"]

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  #: the sitemap protocol's own limit, uncompressed
MAX_SITEMAPS = 200  #: sitemaps read per submit (indexes included)
MAX_URLS = 1_000_000  #: page URLs taken per submit
MAX_NESTING = 3  #: index -> index -> sitemap at most
MAX_REDIRECTS = 5
TIMEOUT_S = 30.0


class SitemapError(CrawlqError):
    """A sitemap or robots.txt could not be fetched or read (the message says which and why)."""


def _local(tag: object) -> str:
    return str(tag).rpartition("}")[2].lower()


def _gunzip(body: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, MAX_SITEMAP_BYTES + 1)
    except zlib.error as exc:
        raise ValueError(f"not valid gzip ({exc})") from exc
    if len(out) > MAX_SITEMAP_BYTES:
        raise ValueError(f"more than {MAX_SITEMAP_BYTES} bytes once gunzipped")
    return out


def parse_sitemap(body: bytes) -> tuple[str, list[str]]:
    """("urlset" or "sitemapindex", the <loc> URLs); raises ValueError for anything else."""
    if body[:2] == b"\x1f\x8b":
        body = _gunzip(body)
    try:
        root = ElementTree.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise ValueError(f"not a readable XML sitemap ({exc})") from exc
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise ValueError(f"its root element is <{kind[:40]}>, not <urlset> or <sitemapindex>")
    locations = [(node.text or "").strip() for node in root.iter() if _local(node.tag) == "loc"]
    return kind, [loc for loc in locations if loc]


class _Reader:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession, policy: AddressPolicy) -> None:
        self.settings = settings
        self.session = session
        self.policy = policy
        self.read = 0
        self.urls: dict[str, None] = {}

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SitemapError(f"{url[:200]} is not an http(s) URL")
        address = literal_address(parts.hostname)
        reason = self.policy.blocked_reason(address) if address is not None else None
        if reason:
            raise SitemapError(f"{url[:200]}: {reason}")

    async def get(self, url: str) -> bytes:
        """The body at `url` (redirects followed, each hop checked); SitemapError if it is not a 200."""
        for _ in range(MAX_REDIRECTS + 1):
            self._check(url)
            try:
                async with self.session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise SitemapError(f"{url[:200]} answered HTTP {response.status}")
                    body = await response.content.read(MAX_SITEMAP_BYTES + 1)
                    if len(body) > MAX_SITEMAP_BYTES:
                        raise SitemapError(f"{url[:200]} is larger than {MAX_SITEMAP_BYTES} bytes")
                    return body
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise SitemapError(f"cannot fetch {url[:200]} ({exc or type(exc).__name__})") from exc
        raise SitemapError(f"{url[:200]}: more than {MAX_REDIRECTS} redirects")

    async def sitemap(self, url: str, nesting: int = 0) -> None:
        if self.read >= MAX_SITEMAPS or len(self.urls) >= MAX_URLS:
            return
        self.read += 1
        try:
            kind, locations = parse_sitemap(await self.get(url))
        except ValueError as exc:
            raise SitemapError(f"sitemap {url[:200]}: {exc}") from None
        if kind == "urlset":
            for location in locations[: MAX_URLS - len(self.urls)]:
                self.urls[location] = None
        elif nesting < MAX_NESTING:
            for location in locations:
                await self.sitemap(location, nesting + 1)

    async def from_robots(self, origin: str) -> list[str]:
        body = await self.get(origin.rstrip("/") + "/robots.txt")
        lines = body.decode("utf-8", errors="replace").splitlines()
        found = [line.partition(":")[2].strip() for line in lines if line.lower().startswith("sitemap:")]
        return [url for url in found if url]


async def sitemap_urls(settings: Settings, sitemaps: Sequence[str], robots_origins: Sequence[str] = ()) -> list[str]:
    """The page URLs listed by `sitemaps` and by the sitemaps that the robots.txt of `robots_origins`
    name, in order, each once."""
    policy = AddressPolicy(settings)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy))
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    headers = {"User-Agent": settings.user_agent}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        reader = _Reader(settings, session, policy)
        named = list(sitemaps)
        for origin in robots_origins:
            named += await reader.from_robots(origin)
        for url in named:
            await reader.sitemap(url)
    return list(reader.urls)
