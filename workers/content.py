"""What a successful fetch records of its page: media type, text encoding, title, snippet, SHA-256, validators.

HTML is parsed with selectolax (Lexbor). The text encoding is chosen as a browser would: a byte-order mark,
then the Content-Type charset, then a `<meta charset>` in the first 4 KiB, then UTF-8. A body above
`OFF_LOOP_BYTES` is described in a thread of the `Extractor`'s own small pool: Lexbor parses with the GIL
released and hashlib hashes large bodies without it, so a 2 MB page does not stall the other fetches of
the event loop. Smaller bodies are described on the loop, in batches (`Extractor`): a batch starts when
`BATCH_PAGES` bodies wait, the first has waited `BATCH_WAIT_S`, or a body is urgent (the engine has no
other fetch in flight), and the engine gives a page's fetch slot and host lease back before it waits, so
the wait delays only its result (which waits up to 0.5 s for its commit anyway). A Lexbor document allocates
about 1 MB of pools and a worker runs much other code between two pages, so the first page of a batch
finds the CPU's caches cold and the next ones warm. Measured with thread CPU time around each describe
in the one-host throughput shape (2 KiB pages): one page at a time, 58 us each; in batches, 40 us (the
first of a batch ~95 us, the fourth and later ~29 us), against 18 us in a loop of describes alone
(`python -m bench.describe_heap`).

For a batch that follows links, the same parse also yields the page's links (`page_links`): `<a href>`
and `<link rel=next href>`, resolved against `<base href>` (else the page's URL), http and https only,
without `rel=nofollow` ones, and none at all when `<meta name=robots>` says `nofollow` or `none`.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import ctypes.util
import functools
import hashlib
import sys
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode
from w3lib.encoding import html_body_declared_encoding, read_bom

from crawlq.models import Content

__all__ = [
    "MAX_LINKS",
    "OFF_LOOP_BYTES",
    "TITLE_CHARS",
    "Extractor",
    "describe",
    "keep_heap_pad",
    "media_type",
    "page_links",
]

OFF_LOOP_BYTES = 64 * 1024  #: bodies above this are described off the event loop
PREFIX_BYTES = 32 * 1024  #: a page whose links are not wanted is parsed this far first (see `_html_fields`)
CUT_MARGIN = 40  #: visible characters beyond the snippet a parsed start must hold (a cut `&...;` is < 40)
TITLE_CHARS = 300  #: a title is cut to this many characters
MAX_LINKS = 2000  #: links kept per page (the first ones in document order)
MAX_LINK_NODES = 20_000  #: `<a>` and `<link>` elements read per page for links (a bound on a page's cost)
PARSE_THREADS = 2  #: threads describing large bodies (each holds at most one parsed page)
BATCH_BYTES = 512 * 1024  #: a batch describes bodies of at most this many bytes before it lets the loop run
BATCH_PAGES = 32  #: a batch starts as soon as this many bodies wait...
BATCH_WAIT_S = 0.05  #: ...or when the first of them has waited this long (or at once: `urgent`)
_HIDDEN_TAGS = ["script", "style", "template", "noscript", "title"]  #: their text is not visible
HEAP_PAD_BYTES = 1 << 20  #: free heap glibc keeps at its top (see `keep_heap_pad`)
_M_TOP_PAD = -2  #: glibc's mallopt parameter
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/javascript", "application/ld+json"})


@functools.lru_cache(maxsize=256)
def media_type(header: str | None) -> str | None:
    """`text/html; charset=utf-8` -> `text/html`; None when absent or empty."""
    if not header:
        return None
    kind = header.partition(";")[0].strip().lower()
    return kind[:100] or None


@functools.lru_cache(maxsize=256)
def _text_codec(name: str | None) -> str | None:
    """The codec's canonical name if `name` is a text encoding Python knows, else None."""
    if not name:
        return None
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError, TypeError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def text_encoding(body: bytes, charset: str | None, html: bool) -> tuple[str, int]:
    """The encoding to read `body` with, and the length of its byte-order mark: the BOM, then the HTTP
    charset, then (HTML) a declared `<meta charset>`, then UTF-8."""
    bom, mark = read_bom(body)
    found = _text_codec(bom) or _text_codec(charset)
    if found is None and html:
        found = _text_codec(html_body_declared_encoding(body[:4096]))
    if found in ("iso8859-1", "ascii"):  # browsers read both as windows-1252, a superset
        found = "cp1252"
    return found or "utf-8", len(mark or b"")


def _is_html(kind: str | None, body: bytes) -> bool:
    if kind is not None:
        return kind in _HTML_TYPES
    start = body[:64].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _is_text(kind: str | None) -> bool:
    return kind is not None and (kind.startswith("text/") or kind in _TEXT_TYPES or kind.endswith(("+xml", "+json")))


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _title(tree: LexborHTMLParser) -> str | None:
    head = tree.head
    node = head.child if head is not None else None
    while node is not None:
        if node.tag == "title":
            return _collapse(node.text())[:TITLE_CHARS] or None
        node = node.next
    return None


def _visible_start(tree: LexborHTMLParser, chars: int) -> str:
    """The visible text of the body (not script, style, template...), white space collapsed: all of it,
    or a start of it longer than `chars` characters.

    The hidden elements are removed from the tree first, so call this last. Lexbor joins the text nodes
    (one C call); only a start of a long text is collapsed, a longer one when that start is mostly white
    space."""
    body = tree.body
    if body is None or chars <= 0:
        return ""
    tree.strip_tags(_HIDDEN_TAGS)
    text = body.text(deep=True, separator=" ", strip=False)
    keep = chars + chars // 4 + 32
    while True:
        piece = _collapse(text[:keep])  # a start of the whole text's collapse (a last word may be cut)
        if len(piece) > chars or keep >= len(text):
            return piece
        keep *= 4


def _tokens(value: str | None) -> set[str]:
    return set((value or "").lower().replace(",", " ").split())


def _nofollow_page(tree: LexborHTMLParser) -> bool:
    for meta in tree.css("meta[name]"):
        if (meta.attributes.get("name") or "").strip().lower() == "robots":
            if _tokens(meta.attributes.get("content")) & {"nofollow", "none"}:
                return True
    return False


def _absolute(base: str, href: str) -> str | None:
    try:
        url = urljoin(base, href.strip())
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def _followable_href(node: LexborNode) -> str | None:
    """The href of an `<a>` without `rel=nofollow` or a `<link rel=next>`; None for any other element."""
    attrs = node.attrs
    rel = attrs.get("rel")
    if rel is None:
        return None if node.tag == "link" else attrs.get("href") or ""
    tokens = _tokens(rel)
    if "nofollow" in tokens or (node.tag == "link" and "next" not in tokens):
        return None
    return attrs.get("href") or ""


def page_links(tree: LexborHTMLParser, page_url: str) -> list[str]:
    """The page's followable links, absolute, in document order, each once: at most `MAX_LINKS`, from its
    first `MAX_LINK_NODES` `<a href>` and `<link href>` elements. Each distinct href is resolved once, so
    a page of 30,000 links to a few places costs what its parse costs (measured: 242 -> 25 ms for 2 MB)."""
    if _nofollow_page(tree):
        return []
    base = page_url
    found_base = tree.css_first("base[href]")
    if found_base is not None:
        base = _absolute(page_url, found_base.attributes.get("href") or "") or page_url
    links: dict[str, None] = {}
    resolved: dict[str, str | None] = {}  #: href -> its absolute URL without fragment (None: not followable)
    for examined, node in enumerate(tree.css("a[href], link[href]")):
        if examined >= MAX_LINK_NODES:
            break
        href = _followable_href(node)
        if href is None:
            continue
        if href in resolved:
            url = resolved[href]
        else:
            absolute = _absolute(base, href)
            url = resolved[href] = absolute.partition("#")[0] if absolute is not None else None
        if url is not None and url not in links:
            links[url] = None
            if len(links) >= MAX_LINKS:
                break
    return list(links)


def _parse(body: bytes, encoding: str) -> LexborHTMLParser:
    return LexborHTMLParser(body if encoding == "utf-8" else body.decode(encoding, errors="replace"))


def _html_fields(
    body: bytes, encoding: str, snippet_chars: int, page_url: str | None
) -> tuple[str | None, str, list[str]]:
    """Title, snippet and (`page_url` given) links. A long page is parsed to `PREFIX_BYTES` first: when that
    start holds more visible text than the snippet needs (by `CUT_MARGIN`, for a character reference or a
    word cut at the end), the head and the snippet's text are complete in it, and they are what the whole
    page gives. Otherwise the whole page gives them. The whole page is parsed for links (when wanted), but
    never walked for its text (a 2 MB page: 28 ms in two C calls that hold the GIL)."""
    if snippet_chars > 0 and len(body) > PREFIX_BYTES:
        start = _parse(body[:PREFIX_BYTES], encoding)
        title = _title(start)
        text = _visible_start(start, snippet_chars + CUT_MARGIN)
        if len(text) > snippet_chars + CUT_MARGIN:
            links = page_links(_parse(body, encoding), page_url) if page_url is not None else []
            return title, text[:snippet_chars], links
    tree = _parse(body, encoding)
    links = page_links(tree, page_url) if page_url is not None else []
    title = _title(tree)
    return title, _visible_start(tree, snippet_chars)[:snippet_chars], links  # strips hidden elements: last


def describe(body: bytes, headers: Mapping[str, str], charset: str | None, snippet_chars: int) -> Content:
    """Everything `Content` holds for one body and its response headers. Never raises for bad input."""
    return describe_page(body, headers, charset, snippet_chars, None)[0]


def describe_page(
    body: bytes, headers: Mapping[str, str], charset: str | None, snippet_chars: int, page_url: str | None
) -> tuple[Content, list[str]]:
    """`describe`, and the page's links (`page_links`) when `page_url` is given and the body is HTML."""
    kind = media_type(headers.get("Content-Type"))
    content = Content(
        content_type=kind,
        content_sha256=hashlib.sha256(body).hexdigest(),
        etag=headers.get("ETag"),
        last_modified=headers.get("Last-Modified"),
        content_length=_length(headers.get("Content-Length")),
        content_language=headers.get("Content-Language"),
        content_encoding=headers.get("Content-Encoding"),
    )
    html = _is_html(kind, body)
    if not html and not _is_text(kind):
        return content, []  # binary: no text to read
    content.encoding, mark = text_encoding(body, charset, html)
    text = body[mark:] if mark else body
    links: list[str] = []
    if html:
        content.title, snippet, links = _html_fields(text, content.encoding, snippet_chars, page_url)
    else:
        head = text[: max(4096, snippet_chars * 8)]
        snippet = _collapse(head.decode(content.encoding, errors="replace"))[:snippet_chars]
    content.snippet = snippet if snippet_chars > 0 else None
    return content, links


def _length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit() or len(value) > 20:
        return None
    return int(value)


def keep_heap_pad(pad_bytes: int = HEAP_PAD_BYTES) -> bool:
    """Have glibc keep `pad_bytes` of free memory at the top of the heap instead of giving it back at once.

    Each Lexbor document allocates its pools on the heap's top and frees them when the page is described;
    glibc then returned that memory to the kernel (brk) and the next page faulted it in again, zeroed:
    half the cost of parsing a small page (measured: 12.8 us -> 6.4 us per 2 KiB page). A no-op (False)
    where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TOP_PAD, pad_bytes))
    except (OSError, AttributeError):
        return False


@dataclass(slots=True)
class _Pending:
    body: bytes
    headers: Mapping[str, str]
    charset: str | None
    page_url: str | None
    future: asyncio.Future[tuple[Content, list[str]]]


class Extractor:
    """Describes bodies for one worker process: small ones on the event loop, in batches, large ones in a
    small thread pool. A batch starts when `BATCH_PAGES` bodies wait, the first has waited `BATCH_WAIT_S`, or
    a body is urgent, and describes at most `BATCH_BYTES` before the loop runs again. The wait costs a page
    nothing of its fetch: the engine gives the fetch slot and the host lease back before the page is described."""

    def __init__(self, snippet_chars: int) -> None:
        self.snippet_chars = snippet_chars
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[_Pending] = deque()
        self._timer: asyncio.TimerHandle | None = None  #: the batch's start, `BATCH_WAIT_S` after its first body
        self._now: asyncio.Handle | None = None  #: the batch's start at the next turn of the loop
        self.batches = 0  #: batches described (for tests and benchmarks)

    async def describe(self, body: bytes, headers: Mapping[str, str], charset: str | None) -> Content:
        return (await self.page(body, headers, charset, None))[0]

    async def page(
        self,
        body: bytes,
        headers: Mapping[str, str],
        charset: str | None,
        page_url: str | None,
        urgent: bool = False,
    ) -> tuple[Content, list[str]]:
        """The body's description, and its links when `page_url` is given (see `describe_page`). `urgent`:
        no more pages are coming soon (nothing else is in flight), so the batch starts now."""
        loop = asyncio.get_running_loop()
        if len(body) <= OFF_LOOP_BYTES:
            future: asyncio.Future[tuple[Content, list[str]]] = loop.create_future()
            self._pending.append(_Pending(body, headers, charset, page_url, future))
            if urgent or len(self._pending) >= BATCH_PAGES:
                self._start_now(loop)
            elif self._timer is None and self._now is None:
                self._timer = loop.call_later(BATCH_WAIT_S, self._describe_pending)
            return await future
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="crawlq-parse")
        chars = self.snippet_chars
        return await loop.run_in_executor(self._pool, describe_page, body, headers, charset, chars, page_url)

    def _start_now(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._now is None:
            self._now = loop.call_soon(self._describe_pending)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _describe_pending(self) -> None:
        """Describe the waiting bodies in order, up to `BATCH_BYTES`; the rest in the next turn of the loop."""
        self._now = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.batches += 1
        pending, budget = self._pending, BATCH_BYTES
        while pending and budget > 0:
            item = pending.popleft()
            if item.future.done():  # its fetch was cancelled (deadline, shutdown)
                continue
            budget -= len(item.body)
            try:
                described = describe_page(item.body, item.headers, item.charset, self.snippet_chars, item.page_url)
            except Exception as exc:  # describe_page does not raise for bad input: a bug, failed for this URL
                item.future.set_exception(exc)
            else:
                item.future.set_result(described)
        if pending:
            self._start_now(asyncio.get_running_loop())

    def close(self) -> None:
        for handle in (self._timer, self._now):
            if handle is not None:
                handle.cancel()
        self._timer = self._now = None
        for item in self._pending:
            item.future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
