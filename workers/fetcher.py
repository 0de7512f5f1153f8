"""One fetch attempt: an aiohttp GET with an overall deadline, checked redirects and a capped body.

`Fetcher.fetch` never raises for HTTP or network trouble: it returns an `Attempt` whose `error` is a
`crawlq.models.ErrorClass`. This is the only module that catches aiohttp's exceptions. What it relies
on in aiohttp beyond the public API: the exception chain of a malformed reply (`http_exceptions`), and
`ClientSession._retry_connection` (see `one_request_per_attempt`); tests/test_fetch_errors.py pins both.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import http_exceptions
from aiohttp.abc import AbstractResolver
from yarl import URL

from crawlq.addresses import AddressPolicy, AddressRules, BlockedAddress, GuardedResolver, literal_address
from crawlq.bodies import BodyStore, StorageFailed
from crawlq.errors import InvalidURL
from crawlq.models import Content, ErrorClass, now_ms
from crawlq.settings import Settings
from crawlq.urls import canonical, host_of
from workers.content import Extractor
from workers.retry import parse_retry_after

__all__ = ["DECODABLE_ENCODINGS", "Attempt", "Fetcher", "RequestSpec", "decode_text", "one_request_per_attempt"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
READ_CHUNK = 64 * 1024
#: the Content-Encodings aiohttp decodes here (br: Brotli, zstd: backports.zstd or Python 3.14's own)
DECODABLE_ENCODINGS = frozenset({"identity", "gzip", "deflate", "br", "zstd"})


@dataclass(slots=True, frozen=True)
class RequestSpec:
    """What a batch adds to its requests (`crawlq.options.BatchOptions`), plus a URL's conditional headers.

    `private` headers (credentials, cookies) go only to the first URL's host: a redirect elsewhere drops
    them, as browsers drop Authorization."""

    headers: Mapping[str, str] = field(default_factory=dict)
    private: frozenset[str] = frozenset()  #: names (lower case) of the headers kept to the first host
    proxy: str | None = None
    #: the batch's SSRF rules (the API's), used instead of the worker's for every connection and hop
    address_rules: AddressRules | None = None
    links: bool = False  #: the batch follows links: a successful HTML page's links go in `Attempt.links`

    @property
    def conditional(self) -> bool:
        return any(name.lower() in ("if-none-match", "if-modified-since") for name in self.headers)

    def for_hop(self, first_host: str, host: str) -> Mapping[str, str]:
        if host == first_host or not self.private:
            return self.headers
        return {name: value for name, value in self.headers.items() if name.lower() not in self.private}


NO_REQUEST = RequestSpec()


@dataclass(slots=True)
class Attempt:
    """What one attempt produced. `latency_ms` runs from the request start to the end of the body."""

    status: int | None
    error: ErrorClass | None
    message: str | None
    latency_ms: float | None
    size: int
    final_url: str
    retry_after_s: float | None = None
    body: bytes = b""
    charset: str | None = None
    content: Content | None = None  #: a success's page description, when content extraction is on
    links: list[str] = field(default_factory=list)  #: a success's links (absolute), when the batch follows links
    undescribed: Undescribed | None = None  #: a success fetched with `defer`: `Fetcher.finish` describes it
    ended_at_ms: int = 0  #: epoch ms when the attempt ended (its body read), before any description

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True, frozen=True)
class Undescribed:
    """A successful body still to be described (content extraction, links) and stored (body store)."""

    body: bytes
    headers: Mapping[str, str]
    charset: str | None
    content: bool  #: describe it (and store it) as content
    links: bool  #: find its links


class _Deadlines:
    """Cancels the fetches that outlive their deadline, with one ticker for every fetch in flight rather
    than a timer each (`asyncio.timeout` costs a timer handle and a state machine per fetch). A deadline
    fires within `TICK_S` after it passes; the ticker stops while nothing is in flight."""

    TICK_S = 0.05

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def watch(self, task: asyncio.Task[Any], due: float) -> None:
        """Cancel `task` once the monotonic clock passes `due`, unless `forget` is called first."""
        self._due[task] = due
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="crawlq-fetch-deadlines")

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task` was cancelled for its deadline (asked once, in its CancelledError handler)."""
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    async def _tick(self) -> None:
        while self._due:
            await asyncio.sleep(self.TICK_S)
            now = time.monotonic()
            for task in [task for task, due in self._due.items() if due <= now]:
                del self._due[task]
                self._expired.add(task)
                task.cancel()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None


class _TooLarge(Exception):
    def __init__(self, read: int) -> None:
        self.read = read


def one_request_per_attempt(session: aiohttp.ClientSession) -> None:
    """Turn off aiohttp's silent second request when a server closes the connection without a reply.

    aiohttp sends an idempotent request again, once, whenever the connection closes before the response
    (RFC 9112 allows it for a stale keep-alive connection), even on a fresh connection, so a server that
    drops every request saw two per attempt. Here each attempt is one request; a stale keep-alive race
    (rare: aiohttp drops connections the server closed while idle) fails as `connect` and takes the
    retry policy's next attempt. aiohttp has no public switch; its private attribute is pinned by a test."""
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError("aiohttp.ClientSession has no _retry_connection: review one_request_per_attempt")
    session._retry_connection = False


def decode_text(body: bytes, charset: str | None) -> str:
    """Decode a body with its declared charset, falling back to UTF-8; bad bytes become U+FFFD.

    Never raises: an unknown charset, or a codec that is not a text encoding (hex, rot13, idna...), is
    replaced by UTF-8."""
    if charset:
        try:
            info = codecs.lookup(charset)
            if getattr(info, "_is_text_encoding", True):
                return body.decode(info.name, errors="replace")
        except (LookupError, ValueError, UnicodeError, TypeError):
            pass
    return body.decode("utf-8", errors="replace")


@dataclass(slots=True)
class _Guarded:
    """One address policy with its own session: its connections (keep-alive pool) and DNS cache serve only
    fetches under that policy, so a connection opened under looser rules is never reused under stricter ones."""

    policy: AddressPolicy
    session: aiohttp.ClientSession
    literal_verdicts: dict[str, str | None] = field(default_factory=dict)


class Fetcher:
    """One aiohttp session per worker process and address policy (connection reuse, DNS cache, guarded
    resolver): the worker's own, and one per batch rules in use (the API's; a handful at most)."""

    def __init__(self, settings: Settings, resolver: AbstractResolver | None = None) -> None:
        """:param resolver: the DNS resolver to guard (default: aiohttp's); tests pass a stub."""
        self.settings = settings
        self.policy = AddressPolicy(settings)
        self._inner_resolver = resolver
        self._default: _Guarded | None = None
        self._by_rules: dict[AddressRules, _Guarded] = {}
        self._deadlines = _Deadlines()
        self._extractor = Extractor(settings.snippet_chars) if settings.extract_content else None
        self._link_extractor: Extractor | None = None  #: parses followed pages when content extraction is off
        self.bodies: BodyStore | None = None  #: where successful bodies go (`CRAWLQ_STORE_BODIES`), if anywhere

    def _open(self, policy: AddressPolicy) -> _Guarded:
        connector = aiohttp.TCPConnector(
            limit=0,
            resolver=GuardedResolver(policy, self._inner_resolver),
            ttl_dns_cache=60,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": self.settings.user_agent},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
        )
        one_request_per_attempt(session)
        return _Guarded(policy, session)

    async def start(self) -> None:
        self._default = self._open(self.policy)

    async def close(self) -> None:
        await self._deadlines.close()
        if self._extractor is not None:
            self._extractor.close()
        if self._link_extractor is not None:
            self._link_extractor.close()
        guarded = [*self._by_rules.values(), *([self._default] if self._default is not None else [])]
        self._by_rules.clear()
        self._default = None
        for one in guarded:
            await one.session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session under the worker's own address policy."""
        return self._guarded(None).session

    def _guarded(self, rules: AddressRules | None) -> _Guarded:
        if self._default is None:
            raise RuntimeError("Fetcher.start() was not called")
        if rules is None:
            return self._default
        found = self._by_rules.get(rules)
        if found is None:
            found = self._by_rules[rules] = self._open(AddressPolicy.of_batch(rules))
        return found

    async def fetch(
        self,
        url: str,
        *,
        keep_body: bool = False,
        content: bool = True,
        request: RequestSpec = NO_REQUEST,
        defer: bool = False,
    ) -> Attempt:
        """One attempt, redirects included, within `fetch_timeout_s` overall.

        :param keep_body: keep the body in the `Attempt` (robots.txt)
        :param content: describe a successful page (`Attempt.content`), when `extract_content` is on
        :param request: the batch's headers and proxy; a 304 to a conditional request is a success
        :param defer: leave a success's description and storage to `finish` (`Attempt.undescribed`), so
            the caller can give its fetch slot and host lease back first: describing is not fetching"""
        attempt = await self._attempt(url, keep_body, content, request)
        attempt.ended_at_ms = now_ms()
        return attempt if defer else await self.finish(attempt)

    async def finish(self, attempt: Attempt, urgent: bool = True) -> Attempt:
        """A success fetched with `defer`, described and its body stored (a `storage` failure if the body
        store refuses it); any other attempt as it is. `urgent`: describe it now rather than in a batch
        with the pages that come in the next few ms (see `Extractor`)."""
        todo = attempt.undescribed
        if todo is None:
            return attempt
        attempt.undescribed = None
        attempt.content, attempt.links = await self._describe(todo, attempt.final_url, urgent)
        if todo.content and self.bodies is not None:
            try:
                attempt.content = await self._store(todo.body, attempt.content)
            except StorageFailed as exc:
                return Attempt(
                    attempt.status, ErrorClass.STORAGE, str(exc)[:300], attempt.latency_ms, attempt.size,
                    attempt.final_url, ended_at_ms=attempt.ended_at_ms,
                )  # fmt: skip
        return attempt

    async def _attempt(self, url: str, keep_body: bool, content: bool, request: RequestSpec) -> Attempt:
        start = time.perf_counter()
        state = {"url": url}
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._deadlines.watch(task, time.monotonic() + self.settings.fetch_timeout_s)
        try:
            return await self._follow(url, start, state, keep_body, content, request)
        except asyncio.CancelledError:
            if not self._deadlines.expired(task) or task.uncancel() > cancelling:
                raise  # cancelled from outside (shutdown, hand-back), not by the deadline
            message = f"no complete response within {self.settings.fetch_timeout_s:g} s"
            return self._failed(ErrorClass.TIMEOUT, message, start, state["url"])
        except TimeoutError as exc:  # aiohttp's connect timeout
            return self._failed(ErrorClass.TIMEOUT, f"{type(exc).__name__}: {exc}"[:300], start, state["url"])
        except _TooLarge as exc:
            message = f"body exceeded {self.settings.max_body_bytes} bytes"
            return self._failed(ErrorClass.TOO_LARGE, message, start, state["url"], read=exc.read)
        except Exception as exc:  # the taxonomy below; anything else is a bug we still record per URL
            error = classify(exc)
            blocked = [link for link in _chain(exc) if isinstance(link, BlockedAddress)]
            message = str(blocked[0]) if blocked else describe_error(exc, error)
            return self._failed(error, message[:300], start, state["url"])
        finally:
            self._deadlines.forget(task)

    async def _follow(
        self, url: str, start: float, state: dict[str, str], keep_body: bool, content: bool, request: RequestSpec
    ) -> Attempt:
        guarded = self._guarded(request.address_rules)
        current = self._start_url(url, guarded.policy, start)
        if isinstance(current, Attempt):
            return current
        text = url
        seen = {text}
        first_host = current.raw_host or ""
        if request.proxy is not None:
            blocked = self._blocked_host(guarded, request.proxy, URL(request.proxy))
            if blocked:
                return self._failed(ErrorClass.BLOCKED_ADDRESS, f"proxy: {blocked}", start, text)
        for _ in range(self.settings.max_redirects + 1):
            state["url"] = text
            blocked = self._blocked_host(guarded, text, current)
            if blocked:
                return self._failed(ErrorClass.BLOCKED_ADDRESS, blocked, start, text)
            headers = request.for_hop(first_host, current.raw_host or "")
            get = guarded.session.get(current, allow_redirects=False, headers=headers, proxy=request.proxy)
            async with get as response:
                if response.status in REDIRECT_STATUSES and "Location" in response.headers:
                    hop = self._redirect_hop(response, guarded.policy, text, seen, start)
                    if isinstance(hop, Attempt):
                        return hop
                    current, text = hop, str(hop)
                    continue
                if response.status == 304 and request.conditional:
                    return Attempt(304, None, None, (time.perf_counter() - start) * 1000, 0, text)
                return await self._final(response, text, start, keep_body, content, request.links)
        message = f"more than {self.settings.max_redirects} redirects"
        return self._failed(ErrorClass.REDIRECT_LOOP, message, start, text)

    def _start_url(self, url: str, policy: AddressPolicy, start: float) -> URL | Attempt:
        """The first hop's URL, or the blocked attempt of a legacy IPv4 spelling yarl refuses."""
        try:
            return URL(url, encoded=True)
        except ValueError:
            legacy = legacy_ipv4_verdict(url, policy)  # yarl refuses `http://2130706433/`; we block it
            if legacy is not None:
                return self._failed(ErrorClass.BLOCKED_ADDRESS, legacy, start, url)
            raise

    def _redirect_hop(
        self, response: aiohttp.ClientResponse, policy: AddressPolicy, text: str, seen: set[str], start: float
    ) -> URL | Attempt:
        """Where a redirect leads (added to `seen`), or the failed attempt: blocked, bad, or a loop."""
        location = response.headers["Location"]
        legacy = legacy_ipv4_verdict(location, policy)
        if legacy is not None:
            return self._failed(ErrorClass.BLOCKED_ADDRESS, legacy, start, location)
        target = _redirect_target(response)
        if isinstance(target, str):
            return self._failed(ErrorClass.BAD_REDIRECT, target, start, text, response.status)
        if str(target) in seen:
            return self._failed(ErrorClass.REDIRECT_LOOP, f"redirect loop at {target}", start, str(target))
        seen.add(str(target))
        return target

    async def _final(
        self, response: aiohttp.ClientResponse, text: str, start: float, keep_body: bool, content: bool, links: bool
    ) -> Attempt:
        """The attempt's outcome once the last hop answered: read, check and (2xx) describe the body."""
        status = response.status
        success = 200 <= status < 300
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        if success and encoding not in DECODABLE_ENCODINGS:
            message = f"unsupported Content-Encoding {encoding[:40]!r} (decodable: gzip, deflate, br, zstd)"
            return self._failed(ErrorClass.DECODE, message, start, text, status)
        try:
            body = await self._read_body(response)
        except aiohttp.ClientPayloadError as exc:
            error, message = payload_failure(exc, response)
            return self._failed(error, message, start, text, status, read=response.content.total_raw_bytes)
        latency_ms = (time.perf_counter() - start) * 1000
        if success:
            kept, charset = (body, response.charset) if keep_body else (b"", None)
            todo = None
            if self._to_describe(content, links):
                todo = Undescribed(body, response.headers, response.charset, content, links)
            return Attempt(status, None, None, latency_ms, len(body), text, None, kept, charset, undescribed=todo)
        return Attempt(
            status=status,
            error=ErrorClass.HTTP_STATUS,
            message=f"HTTP {status} {response.reason or ''}".strip(),
            latency_ms=latency_ms,
            size=len(body),
            final_url=text,
            retry_after_s=parse_retry_after(response.headers.get("Retry-After"), time.time()),
            body=body if keep_body else b"",
            charset=response.charset if keep_body else None,
        )

    def _to_describe(self, content: bool, links: bool) -> bool:
        """Whether a success has work left after its fetch: a description, links, or a body to store."""
        return links or (content and (self._extractor is not None or self.bodies is not None))

    async def _describe(self, todo: Undescribed, url: str, urgent: bool) -> tuple[Content | None, list[str]]:
        """The page's description (content extraction on) and its links (the batch follows links). With
        content extraction off, a followed page is still parsed for its links; its description is dropped."""
        extractor = self._extractor
        if todo.links and extractor is None:
            extractor = self._link_extractor = self._link_extractor or Extractor(0)
        if extractor is None or not (todo.content or todo.links):
            return None, []
        page_url = url if todo.links else None
        described, found = await extractor.page(todo.body, todo.headers, todo.charset, page_url, urgent)
        return (described if todo.content and self._extractor is not None else None), found

    async def _store(self, body: bytes, described: Content | None) -> Content:
        """Put the body in the body store; the returned description names where (`body_ref`)."""
        assert self.bodies is not None
        if described is None:
            described = Content(content_sha256=hashlib.sha256(body).hexdigest())
        assert described.content_sha256 is not None
        described.body_ref = await self.bodies.put(body, described.content_sha256)
        return described

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """Read the decompressed body, stopping as soon as it exceeds the cap."""
        cap = self.settings.max_body_bytes
        length = response.content_length
        if length is not None and length <= cap and "Content-Encoding" not in response.headers:
            return await response.read()
        parts: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            total += len(chunk)
            if total > cap:
                response.close()
                raise _TooLarge(total)
            parts.append(chunk)
        return b"".join(parts)

    @staticmethod
    def _blocked_host(guarded: _Guarded, text: str, url: URL) -> str | None:
        """Why the URL's host may not be contacted (IP literals, legacy IPv4 forms), cached per host."""
        host = url.raw_host or ""
        verdicts = guarded.literal_verdicts
        if host in verdicts:
            return verdicts[host]
        address = literal_address(host)
        if address is not None:
            verdict = guarded.policy.blocked_reason(address)
        else:
            verdict = legacy_ipv4_verdict(text, guarded.policy)
        if len(verdicts) > 10_000:
            verdicts.clear()
        verdicts[host] = verdict
        return verdict

    @staticmethod
    def _failed(
        error: ErrorClass, message: str, start: float, url: str, status: int | None = None, read: int = 0
    ) -> Attempt:
        # a blocked address never got a request out, so it has no latency to report
        latency = None if error is ErrorClass.BLOCKED_ADDRESS else (time.perf_counter() - start) * 1000
        return Attempt(status, error, message, latency, read, url)


def _redirect_target(response: aiohttp.ClientResponse) -> URL | str:
    """The next hop, or a message saying why the Location is unusable."""
    location = response.headers["Location"]
    try:
        target = response.url.join(URL(location))
    except ValueError as exc:
        return f"unusable Location {location!r}: {exc}"
    if target.scheme not in ("http", "https"):
        return f"redirect to a non-http(s) URL {location!r}"
    if not target.raw_host:
        return f"redirect without a host {location!r}"
    try:
        canonical(str(target.with_fragment(None)))
    except InvalidURL as exc:
        return f"unusable Location {location!r}: {exc.reason}"
    return target.with_fragment(None)


def legacy_ipv4_verdict(url: str, policy: AddressPolicy) -> str | None:
    """Blocked-reason for hosts written in legacy IPv4 forms (`2130706433`, `0x7f000001`, `127.1`)."""
    if not url.startswith(("http://", "https://")) or "]" in url.split("/", 3)[2]:
        return None
    host = host_of(url).rsplit(":", 1)[0]
    if not host or host[0] not in "0123456789" or literal_address(host) is not None:
        return None
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    return policy.blocked_reason(ipaddress.IPv4Address(packed))


def _chain(exc: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not link for link in links):
        links.append(current)
        current = current.__cause__ or current.__context__
    return links


def classify(exc: BaseException) -> ErrorClass:
    """Map an exception from aiohttp to the error taxonomy."""
    if any(isinstance(link, BlockedAddress) for link in _chain(exc)):
        return ErrorClass.BLOCKED_ADDRESS
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ErrorClass.DNS
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError | aiohttp.ServerFingerprintMismatch):
        return ErrorClass.TLS
    if _malformed_reply(exc) is not None:
        return ErrorClass.PROTOCOL
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError | ValueError):
        return ErrorClass.INVALID_URL
    if isinstance(exc, UnicodeError):
        return ErrorClass.DECODE
    if isinstance(exc, asyncio.CancelledError):
        return ErrorClass.CANCELLED
    return ErrorClass.CONNECT


def _malformed_reply(exc: BaseException) -> http_exceptions.BadHttpMessage | None:
    """aiohttp's parser error behind an exception, when the reply was not valid HTTP/1.x."""
    for link in _chain(exc):
        if isinstance(link, http_exceptions.BadHttpMessage):
            return link
    return None


def _quoted_line(message: str) -> str:
    """The offending bytes aiohttp quotes in a parser message (`b'SSH-2.0-OpenSSH'`), if any."""
    quoted = [line.strip() for line in message.splitlines() if line.strip().startswith(("b'", 'b"'))]
    return quoted[0][:120] if quoted else ""


def describe_error(exc: BaseException, error: ErrorClass) -> str:
    """One sentence for a failed attempt, in our words where aiohttp's would mislead (its "400" for a
    reply it could not parse is not a status the server sent)."""
    malformed = _malformed_reply(exc) if error is ErrorClass.PROTOCOL else None
    if malformed is not None:
        quoted = _quoted_line(malformed.message)
        if isinstance(malformed, http_exceptions.BadStatusLine) and "Expected HTTP/" in malformed.message:
            return f"the reply is not HTTP: it begins {quoted}"
        if isinstance(malformed, http_exceptions.BadStatusLine):
            return f"invalid HTTP status line {quoted}"
        if isinstance(malformed, http_exceptions.LineTooLong):
            return "invalid HTTP response: a header line is longer than 16 KiB"
        first = malformed.message.splitlines()[0].strip().rstrip(":") if malformed.message else "malformed"
        return f"invalid HTTP response header: {first} {quoted}".strip()
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before its response was complete"
    return f"{type(exc).__name__}: {exc}"


def payload_failure(exc: aiohttp.ClientPayloadError, response: aiohttp.ClientResponse) -> tuple[ErrorClass, str]:
    """A body that failed after the status line: corrupt compressed bytes (`decode`, final) or a body cut
    short (`truncated`, retried). The status is kept by the caller."""
    links = _chain(exc)
    status = f"HTTP {response.status}"
    if any(isinstance(link, http_exceptions.ContentEncodingError) for link in links):
        encoding = response.headers.get("Content-Encoding", "?")[:40]
        return ErrorClass.DECODE, f"{status}, but the body is not valid {encoding} (Content-Encoding)"
    received = response.content.total_raw_bytes
    if any(isinstance(link, http_exceptions.ContentLengthError) for link in links):
        expected = response.headers.get("Content-Length", "?")[:20]
        message = f"{status}, but the body was cut short: {received} of {expected} bytes (Content-Length)"
        return ErrorClass.TRUNCATED, message
    if any(isinstance(link, http_exceptions.TransferEncodingError) for link in links):
        message = f"{status}, but the chunked body was cut short after {received} bytes (no last chunk)"
        return ErrorClass.TRUNCATED, message
    return ErrorClass.TRUNCATED, f"{status}, but the body failed after {received} bytes: {exc}"[:300]
