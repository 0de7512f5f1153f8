"""URL validation, canonicalisation (w3lib) and the stable per-batch URL id."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

from w3lib.url import canonicalize_url

from crawlq.errors import InvalidURL

__all__ = ["MAX_URL_LENGTH", "canonical", "host_of", "origin_of", "url_id"]

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_CHARS = re.compile(r"^[A-Za-z0-9.\-_\[\]:%]+$")


# URLs made only of these characters, with a lower-case host, no dot segments and no empty query parts,
# are canonicalised by `_fast_canonical` exactly as w3lib would (tests/test_canonical_fast.py checks
# that on random URLs); anything else takes the full path.
_SIMPLE = re.compile(
    r"^(https?)://([a-z0-9][a-z0-9.-]*)(?::(\d{1,5}))?((?:/[A-Za-z0-9_~!$'()*,:@=-]+(?:\.[A-Za-z0-9_~!$'()*,:@=-]+)*)*/?)"
    r"(?:\?((?:[A-Za-z0-9_.~-]+(?:=[A-Za-z0-9_.~-]*)?)(?:&[A-Za-z0-9_.~-]+(?:=[A-Za-z0-9_.~-]*)?)*))?$"
)


def _fast_canonical(text: str) -> str | None:
    match = _SIMPLE.match(text)
    if match is None:
        return None
    scheme, host, port, path, query = match.groups()
    if host.endswith(".") or ".." in host:
        return None
    if port is not None:
        number = int(port)
        if number == 0 or number > 65535:
            return None
        host = host if _DEFAULT_PORTS[scheme] == number else f"{host}:{number}"
    if query:
        pairs = sorted(tuple(part.split("=", 1)) if "=" in part else (part, "") for part in query.split("&"))
        return f"{scheme}://{host}{path or '/'}?{'&'.join(k + '=' + v for k, v in pairs)}"
    return f"{scheme}://{host}{path or '/'}"


def canonical(raw: str) -> str:
    """Validate `raw` and return its canonical form; raise `InvalidURL` with a reason.

    The canonical form has a lower-case scheme and host, the host in punycode (IDN), the default port
    dropped, the query sorted and percent-encoded, and no fragment, so two spellings of one URL collide.
    """
    text = _check_shape(raw)
    fast = _fast_canonical(text)
    if fast is not None:
        return fast
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"malformed URL ({exc})") from exc
    hostport = parts.netloc.rpartition("@")[2]
    if not hostport:
        raise InvalidURL("missing host")
    if any(ch.isspace() for ch in hostport):
        raise InvalidURL("space in the host")
    host = parts.hostname
    if not host:
        raise InvalidURL("missing host")
    if port is not None and port == 0:
        raise InvalidURL("invalid port 0")
    if not _HOST_CHARS.match(host) and not _HOST_CHARS.match(_punycode(host)):
        raise InvalidURL(f"invalid character in the host {host!r}")
    if port is not None and _DEFAULT_PORTS.get(parts.scheme.lower()) == port:
        netloc = parts.netloc[: parts.netloc.rindex(":")]
        text = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    try:
        return str(canonicalize_url(text))
    except (ValueError, UnicodeError) as exc:
        raise InvalidURL(f"malformed URL ({exc})") from exc


def _punycode(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidURL(f"invalid international host name {host!r}") from exc


def _check_shape(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise InvalidURL("empty line")
    if len(text) > MAX_URL_LENGTH:
        raise InvalidURL(f"URL longer than {MAX_URL_LENGTH} characters ({len(text)})")
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise InvalidURL("missing scheme (expected http:// or https://)")
    if scheme.lower() not in ("http", "https"):
        raise InvalidURL(f"scheme {scheme!r} is not http or https")
    return text


def url_id(canonical_url: str) -> str:
    """A 64-bit id of a canonical URL, as 16 hex characters (collisions: ~3e-8 at a million URLs)."""
    return hashlib.blake2b(canonical_url.encode(), digest_size=8).hexdigest()


def _netloc(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a canonical URL, without userinfo, by string slicing (hot path)."""
    scheme, _, rest = url.partition("://")
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1 and found < end:
            end = found
    return scheme, rest[:end].rpartition("@")[2]


def host_of(url: str) -> str:
    """The politeness key of a canonical URL: its host (punycode, lower case) and non-default port."""
    return _netloc(url)[1]


def origin_of(url: str) -> str:
    """scheme://host[:port] of a canonical URL (the robots.txt scope)."""
    scheme, netloc = _netloc(url)
    return f"{scheme}://{netloc}"
